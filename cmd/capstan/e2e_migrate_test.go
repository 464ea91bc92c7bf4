package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/servicetest"
	"github.com/capstan-ota/capstan/internal/testutil"
	"github.com/capstan-ota/capstan/origin/client"
	"github.com/capstan-ota/capstan/release"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// TestMigrateToSharedStore moves an embedded origin's data folder to
// PostgreSQL and S3 with `capstan origin migrate`: the copy resumes after
// losing part of the destination, refuses a blob that does not match its
// hash, and an origin started on the shared store serves the same
// releases and channel records, signed by the same key.
func TestMigrateToSharedStore(t *testing.T) {
	if testing.Short() {
		t.Skip("processes")
	}
	db := servicetest.Postgres(t)
	s3, bucket := servicetest.S3(t)
	data := t.TempDir()
	p, api := startOriginProc(t, data)
	const app = "com.example.migrate"
	c := &client.Client{Server: api, APIKey: e2eAdminKey}
	for i := 0; i < 2; i++ {
		if _, err := c.UploadRelease(context.Background(), client.Upload{App: app, Version: fmt.Sprintf("1.0.%d", i), Channel: "production", Bundle: bytes.NewReader(smallBundle(i))}); err != nil {
			t.Fatal(err)
		}
	}
	before := stateOf(t, api)
	p.Stop(t)

	env := append(os.Environ(), append(s3.Env(), "CAPSTAN_STORE="+db)...)
	migrate := func(wantOK bool) string {
		t.Helper()
		cmd := exec.Command(testutil.Binary(t), "origin", "migrate", "--from", data, "--blobs", s3.URL(bucket))
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if (err == nil) != wantOK {
			t.Fatalf("capstan origin migrate: %v (want success %v)\n%s", err, wantOK, out)
		}
		return string(out)
	}
	out := migrate(true)
	if !strings.Contains(out, "digest") || !strings.Contains(out, "already there") {
		t.Fatalf("migrate did not report its copy:\n%s", out)
	}
	// Lose part of the destination, as an interrupted run would have left
	// it: the second run copies exactly what is missing.
	mc, err := minio.New(s3.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	var lost []string
	for o := range mc.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err == nil && len(lost) < 2 {
			lost = append(lost, o.Key)
		}
	}
	for _, k := range lost {
		if err := mc.RemoveObject(context.Background(), bucket, k, minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if out := migrate(true); !strings.Contains(out, ": 2 blobs copied") {
		t.Fatalf("resumed migrate should copy the 2 lost blobs:\n%s", out)
	}
	// A blob damaged on the source disk is refused, never copied.
	name := filepath.Base(lost[0])
	src := filepath.Join(data, "blobs", name[:2], name)
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte("bit rot"), 0o644); err != nil {
		t.Fatal(err)
	}
	mc.RemoveObject(context.Background(), bucket, lost[0], minio.RemoveObjectOptions{})
	if out := migrate(false); !strings.Contains(out, "does not match its expected SHA-256") {
		t.Fatalf("migrate of a damaged blob should fail on its hash:\n%s", out)
	}
	// Repaired, the same command finishes the copy.
	if err := os.WriteFile(src, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	migrate(true)

	st := &sharedStore{db: db, blobs: s3.URL(bucket), keyFile: filepath.Join(data, "origin.key"),
		env: append([]string{"CAPSTAN_ADMIN_KEY=unused-now-0123456789abcdef0123456789", "CAPSTAN_STORE=" + db}, s3.Env()...)}
	o := st.start(t, "")
	after := stateOf(t, o.api)
	if after != before {
		t.Fatalf("channel records differ after the move:\nbefore %s\nafter  %s", before, after)
	}
	for _, v := range []string{"1.0.0", "1.0.1"} {
		checkWhole(t, o.api, app, v)
	}
	// The admin key of the embedded origin works on the shared one.
	c2 := &client.Client{Server: o.api, APIKey: e2eAdminKey}
	if _, err := c2.UploadRelease(context.Background(), client.Upload{App: app, Version: "1.1.0", Channel: "production", Bundle: bytes.NewReader(smallBundle(7))}); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(data, "origin.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := release.ParsePublicKeys(pub)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "a new channel record signed by the migrated origin key", func() bool {
		var s struct {
			Channels []*release.Envelope `json:"channels"`
		}
		if err := c2.Do(context.Background(), http.MethodGet, "/v1/state", nil, &s); err != nil || len(s.Channels) != 1 {
			return false
		}
		ch, err := s.Channels[0].Channel()
		return err == nil && ch.Release.Version == "1.1.0" && s.Channels[0].Verify(release.KeysFor(keys, release.RoleOrigin)) == nil
	})
}

// stateOf returns an origin's /v1/state as a canonical string.
func stateOf(t *testing.T, api string) string {
	t.Helper()
	resp, err := http.Get(api + "/v1/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
