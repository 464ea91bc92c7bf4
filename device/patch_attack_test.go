package device_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/release"
)

// #1/#9 A tampered patch is refused (every output file is checked against
// the signed target manifest) and the device falls back to verified files;
// nothing from the bad patch is installed.
func TestAttackTamperedPatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"flipped byte", func(b []byte) []byte { b[len(b)-len(b)/3] ^= 0x10; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"garbage", func([]byte) []byte { return []byte("not a patch at all") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			d, dir := installV1(t, c, devOpts{})
			c.upload("2.0.0", v2Files, uploadOpts{})
			c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasPrefix(r.URL.Path, "/v1/patches/") {
					return false
				}
				w.Write(tc.edit(c.proxy.fetch(r.URL.Path)))
				return true
			})
			res := d.Update(context.Background())
			if res.Status != device.StatusUpdated || res.Mode != device.ModeFiles {
				t.Fatalf("%+v", res)
			}
			sameTree(t, dir, v2Files)
			if c.proxy.count("patches") == 0 {
				t.Fatal("no patch was asked for: the test proves nothing")
			}
		})
	}
}

// #9 A patch built from another base (a valid patch, for a release the
// device does not run) is refused before it is applied.
func TestAttackPatchForWrongBase(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	other := c.upload("1.5.0", map[string]string{"index.html": "<h1>1.5</h1>", "js/app.js": "console.log(15)", "css/site.css": "body{}"}, uploadOpts{channel: "beta"})
	v2 := c.upload("2.0.0", v2Files, uploadOpts{})
	var served bool
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/v1/patches/") || strings.HasPrefix(r.URL.Path, "/v1/patches/"+release.ZeroHash.String()) {
			return false
		}
		served = true
		w.Write(c.proxy.fetch("/v1/patches/" + other.ID.String() + "/" + v2.ID.String()))
		return true
	})
	res := d.Update(context.Background())
	if res.Status != device.StatusUpdated || res.Mode == device.ModeDelta {
		t.Fatalf("%+v", res)
	}
	sameTree(t, dir, v2Files)
	if !served {
		t.Fatal("the device never asked for a patch: the test proves nothing")
	}
}
