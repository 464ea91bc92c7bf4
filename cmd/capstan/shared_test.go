package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/origin"
	"github.com/capstan-ota/capstan/release"
)

// TestSharedSettings resolves --store, --blobs and --origin-key from the
// config file and the environment, refuses a partial shared store with a
// message that names all three, and reads the origin key as a file or as
// the PEM itself (an environment secret).
func TestSharedSettings(t *testing.T) {
	dir := t.TempDir()
	k, _ := release.GenerateKey()
	pemKey, _ := release.EncodePrivateKey(k)
	keyFile := filepath.Join(dir, "origin.key")
	os.WriteFile(keyFile, pemKey, 0o600)
	cfgFile := filepath.Join(dir, "c.json")
	os.WriteFile(cfgFile, []byte(`{"store":"postgres://file@db/capstan","blobs":"s3://from-file?endpoint=x","origin_key":"`+keyFile+`"}`), 0o600)
	t.Setenv("CAPSTAN_CONFIG", cfgFile)
	t.Setenv("CAPSTAN_BLOBS", "s3://from-env?endpoint=y")
	cli = globals{}
	if err := cli.load(); err != nil {
		t.Fatal(err)
	}
	got := sharedFlags{}.resolve()
	want := sharedFlags{store: "postgres://file@db/capstan", blobs: "s3://from-env?endpoint=y", originKey: keyFile}
	if got != want {
		t.Fatalf("resolved %+v, want %+v (env beats file)", got, want)
	}
	cli = globals{}
	t.Setenv("CAPSTAN_BLOBS", "")
	cfg := origin.Config{DataDir: dir}
	if _, err := (sharedFlags{store: "postgres://x@db/c", originKey: keyFile}).open(context.Background(), &cfg); err == nil ||
		!strings.Contains(err.Error(), "--store") || !strings.Contains(err.Error(), "--blobs") || !strings.Contains(err.Error(), "--origin-key") {
		t.Fatalf("a store without blobs: %v; want one message naming all three settings", err)
	}
	for _, v := range []string{keyFile, string(pemKey)} {
		got, err := loadOriginKey(v)
		if err != nil || !got.Equal(k) {
			t.Fatalf("origin key from %.20q: %v", v, err)
		}
	}
	if r := redact("postgres://capstan:s3cret@db/capstan"); strings.Contains(r, "s3cret") {
		t.Fatalf("redact left the password: %s", r)
	}
	cli = globals{}
}
