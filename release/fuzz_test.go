package release

import (
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary bytes to every decoder of signed documents:
// none may panic, and whatever they accept must validate and stay bounded.
func FuzzDecode(f *testing.F) {
	m, _ := testManifest().Encode()
	k, _ := GenerateKey()
	c := &Channel{Type: TypeChannel, App: "a", Channel: "b", Seq: 3, Release: Ref{Version: "1.0.0", ID: Sum(m)}, RolloutBPS: 5000,
		Issued: time.Unix(0, 0).UTC(), Expires: time.Unix(3600, 0).UTC()}
	cb, _ := c.Encode()
	env := Seal(cb, k)
	eb, _ := jsonMarshal(env)
	f.Add(m)
	f.Add(cb)
	f.Add(eb)
	f.Add([]byte(`{"signed":{},"signatures":[{"keyid":"x","sig":"AAAA"}]}`))
	f.Add([]byte(`{"type":"capstan.release/v1","app":"a","version":"1.0.0","files":[{"path":"../x","size":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := DecodeManifest(b); err == nil {
			if m.Validate() != nil || len(m.Files) > MaxFiles {
				t.Fatal("accepted an invalid manifest")
			}
			for _, f := range m.Files {
				if ValidatePath(f.Path) != nil {
					t.Fatalf("accepted unsafe path %q", f.Path)
				}
			}
		}
		if c, err := DecodeChannel(b); err == nil && c.Validate() != nil {
			t.Fatal("accepted an invalid channel record")
		}
		if e, err := DecodeEnvelope(b); err == nil {
			_ = e.Verify(nil)
			e.Manifest()
			e.Channel()
		}
	})
}
