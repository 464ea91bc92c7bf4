package device_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

func secretFiles(tag string) map[string]string {
	return map[string]string{
		"index.html":   "<h1>" + strings.Repeat("TOP-SECRET-"+tag+"-", 200) + "</h1>",
		"js/app.js":    strings.Repeat("PRIVATE-LOGIC-"+tag+";", 5000), // several chunks
		"css/site.css": "body{}",
	}
}

// folderContains returns which needles some file under dir contains.
func folderContains(t *testing.T, dir string, needles ...string) map[string]bool {
	t.Helper()
	found := map[string]bool{}
	filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		for _, n := range needles {
			if err == nil && bytes.Contains(b, []byte(n)) {
				found[n] = true
			}
		}
		return nil
	})
	return found
}

func encryptingCluster(t *testing.T) (*cluster, *ecdh.PrivateKey) {
	c := newCluster(t)
	box, err := release.GenerateBoxKey()
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := release.EncodeBoxPublicKey(box.PublicKey())
	s := string(pem)
	if _, err := c.origin.SetApp(testApp, wire.AppSettings{EncryptKey: &s}); err != nil {
		t.Fatal(err)
	}
	return c, box
}

// #18 Eavesdrop: with encryption on, edges and the origin's blob storage
// hold only ciphertext, and a device with the app's key installs the
// exact files.
func TestEncryptedReleases(t *testing.T) {
	t.Parallel()
	c, box := encryptingCluster(t)
	v1, v2 := secretFiles("one"), secretFiles("two")
	c.upload("1.0.0", v1, uploadOpts{})
	dir := t.TempDir()
	mk := func() *device.Device {
		d, err := device.New(device.Config{Dir: dir, Edges: []string{c.proxy.srv.URL}, App: testApp, Channel: "production",
			DeviceID: "dev-1", Keys: c.keys(), DecryptKey: box, Now: c.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := mk()
	if res := d.Update(context.Background()); res.Status != device.StatusUpdated {
		t.Fatalf("%+v", res)
	}
	sameTree(t, dir, v1)
	c.upload("2.0.0", v2, uploadOpts{})
	if res := mk().Update(context.Background()); res.Status != device.StatusUpdated || res.To != "2.0.0" || res.Mode != device.ModeFiles {
		t.Fatalf("%+v", res)
	}
	if n := c.proxy.count("patches"); n != 0 {
		t.Fatalf("device asked for %d patches of an encrypted release", n)
	}
	sameTree(t, dir, v2)
	// Control: the same scan finds plaintext of an unencrypted app, so the
	// assertions are not vacuous.
	plain := map[string]string{"index.html": "PLAIN-CONTROL-" + strings.Repeat("x", 100)}
	c.upload("1.0.0", plain, uploadOpts{app: "com.plain.app"})
	// (Patches and the full-bundle stream are compressed; refuse them so
	// the control device fetches the plain files.)
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v1/patches/") {
			http.NotFound(w, r)
			return true
		}
		return false
	})
	pd, err := device.New(device.Config{Dir: t.TempDir(), Edges: []string{c.proxy.srv.URL}, App: "com.plain.app", Channel: "production", Keys: c.keys(), Now: c.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if res := pd.Update(context.Background()); res.Status != device.StatusUpdated {
		t.Fatalf("%+v", res)
	}
	secrets := []string{"TOP-SECRET-one", "PRIVATE-LOGIC-two", "TOP-SECRET-two", "PLAIN-CONTROL-"}
	for name, folder := range map[string]string{"edge": c.edgeDir, "origin": c.originDir} {
		found := folderContains(t, folder, secrets...)
		if !found["PLAIN-CONTROL-"] {
			t.Fatalf("the %s scan cannot see plain blobs either: the test proves nothing", name)
		}
		for _, s := range secrets[:3] {
			if found[s] {
				t.Errorf("%s data folder holds plaintext %q", name, s)
			}
		}
	}
}

func TestEncryptedReleaseRefusals(t *testing.T) {
	t.Parallel()
	stranger, _ := release.GenerateBoxKey()
	for _, tc := range []struct {
		name   string
		key    func(box *ecdh.PrivateKey) *ecdh.PrivateKey
		tamper bool
		want   string
	}{
		{"no decryption key", func(*ecdh.PrivateKey) *ecdh.PrivateKey { return nil }, false, "no decryption key"},
		{"another app's key", func(*ecdh.PrivateKey) *ecdh.PrivateKey { return stranger }, false, "does not decrypt"},
		{"tampered ciphertext", func(b *ecdh.PrivateKey) *ecdh.PrivateKey { return b }, true, "does not decrypt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, box := encryptingCluster(t)
			c.upload("1.0.0", secretFiles("x"), uploadOpts{})
			if tc.tamper {
				var a wire.CheckAnswer
				json.Unmarshal(c.proxy.fetch("/v1/check?app="+testApp+"&channel=production&device=d"), &a)
				ch, err := a.Channel.Channel()
				if err != nil || ch.Release.Sealed.IsZero() {
					t.Fatalf("channel record carries no sealed key: %v", err)
				}
				idx := "/v1/blobs/" + ch.Release.Sealed.String()
				doc, _, err := a.Release.Release()
				if err != nil {
					t.Fatal(err)
				}
				list := "/v1/blobs/" + doc.Files.SHA256.String()
				c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
					if !strings.HasPrefix(r.URL.Path, "/v1/blobs/") || r.URL.Path == idx || r.URL.Path == list {
						return false
					}
					b := c.proxy.fetch(r.URL.Path)
					b[len(b)/2] ^= 0x80
					w.Write(b)
					return true
				})
			}
			dir := t.TempDir()
			d, err := device.New(device.Config{Dir: dir, Edges: []string{c.proxy.srv.URL}, App: testApp, Channel: "production",
				Keys: c.keys(), DecryptKey: tc.key(box), Now: c.clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			mustFail(t, d.Update(context.Background()), tc.want, dir, map[string]string{})
		})
	}
}
