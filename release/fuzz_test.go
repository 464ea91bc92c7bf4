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
	d, _ := testManifest().EncodeDoc()
	f.Add(d)
	f.Add(EncodeFileList(testManifest().Files))
	f.Add([]byte(FileListMagic + "0000000000000000000000000000000000000000000000000000000000000000 1 644 a\n"))
	ob, _ := (&Origin{URL: "http://origin-1:7070", Issued: time.Unix(0, 0).UTC(), Expires: time.Unix(3600, 0).UTC()}).Encode()
	f.Add(ob)
	db, _ := (&Derived{Path: "/v1/patches/a/b", SHA256: Sum(m), Size: 10}).Encode()
	f.Add(db)
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, m, err := DecodeRelease(b); err == nil {
			if d.Validate() != nil || m != nil && m.Validate() != nil {
				t.Fatal("accepted an invalid release")
			}
		}
		if files, err := DecodeFileList(b); err == nil {
			if len(files) > MaxFiles {
				t.Fatal("accepted too many files")
			}
			for _, f := range files {
				if ValidatePath(f.Path) != nil {
					t.Fatalf("accepted unsafe path %q", f.Path)
				}
			}
			if string(EncodeFileList(files)) != string(b) {
				t.Fatal("accepted a non-canonical file list")
			}
		}
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
		if o, err := DecodeOrigin(b); err == nil && o.Validate() != nil {
			t.Fatal("accepted an invalid origin statement")
		}
		if d, err := DecodeDerived(b); err == nil && (d.Validate() != nil || d.Size < 0) {
			t.Fatal("accepted an invalid derived-object statement")
		}
		if e, err := DecodeEnvelope(b); err == nil {
			_ = e.Verify(nil)
			e.Manifest()
			e.Channel()
		}
	})
}
