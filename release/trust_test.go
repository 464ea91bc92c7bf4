package release

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func mustKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestManifestRejectsEscapingPaths(t *testing.T) {
	for _, p := range []string{"../x", "a/../../x", "/etc/passwd", "a\\..\\x", "C:/x", "a//b", "./a", "a/./b", "a\x00b", ""} {
		b, _ := json.Marshal(map[string]any{
			"type": TypeRelease, "app": "app", "version": "1.0.0",
			"files": []map[string]any{{"path": p, "size": 1, "mode": 0o644, "sha256": Sum(nil).String()}},
		})
		if _, err := DecodeManifest(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("path %q: err = %v, want invalid", p, err)
		}
	}
}

func TestVerifyVariants(t *testing.T) {
	k, other := mustKey(t), mustKey(t)
	doc := []byte(`{"x":1}`)
	trusted := []ed25519.PublicKey{pub(k)}
	if err := Seal(doc, k).Verify(trusted); err != nil {
		t.Fatal(err)
	}
	if err := Seal(doc).Verify(trusted); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned: %v", err)
	}
	if err := Seal(doc, other).Verify(trusted); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("other key: %v", err)
	}
	e := Seal(doc, k)
	e.Signed = []byte(`{"x":2}`)
	if err := e.Verify(trusted); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("edited: %v", err)
	}
	// A good and a bad signature under the same key id: refused, not
	// counted as "one of them verified".
	e = Seal(doc, k)
	bad := e.Signatures[0]
	bad.Sig = make([]byte, ed25519.SignatureSize)
	e.Signatures = append(e.Signatures, bad)
	if err := e.Verify(trusted); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("duplicate key id: %v", err)
	}
	e = Seal(doc, k)
	for len(e.Signatures) <= MaxSignatures {
		e.Signatures = append(e.Signatures, e.Signatures[0])
	}
	if err := e.Verify(trusted); err == nil {
		t.Fatal("too many signatures accepted")
	}
}

func TestRotationChain(t *testing.T) {
	rel1, rel2, rel3 := mustKey(t), mustKey(t), mustKey(t)
	org1, org2 := mustKey(t), mustKey(t)
	now := time.Now()
	trusted := []PublicKey{{Key: pub(rel1), Role: RoleRelease}, {Key: pub(org1), Role: RoleOrigin}}
	r12, _ := NewRotation(RoleRelease, "app", rel1, pub(rel2), now)
	r23, _ := NewRotation(RoleRelease, "app", rel2, pub(rel3), now)
	o12, _ := NewRotation(RoleOrigin, "", org1, pub(org2), now)
	// Out of order: the chain is still followed.
	out, applied, err := ApplyRotations(trusted, []*Envelope{r23, o12, r12})
	if err != nil || len(applied) != 3 {
		t.Fatalf("applied %d, err %v", len(applied), err)
	}
	rk, ok := KeysFor(out, RoleRelease), KeysFor(out, RoleOrigin)
	if len(rk) != 1 || !rk[0].Equal(pub(rel3)) || len(ok) != 1 || !ok[0].Equal(pub(org2)) {
		t.Fatalf("trusted after chain: %+v", out)
	}
	// Applying again changes nothing.
	if _, applied, err := ApplyRotations(out, []*Envelope{r12, r23, o12}); err != nil || len(applied) != 0 {
		t.Fatalf("re-apply: %d, %v", len(applied), err)
	}
	// A release rotation signed by another key is refused.
	forged := Seal(r12.Signed, rel3)
	if _, _, _, err := ApplyRotation(trusted, forged); !errors.Is(err, ErrRotation) {
		t.Fatalf("forged: %v", err)
	}
	// An origin rotation vouched for by a release key replaces every origin
	// key, even one the device never heard the old key of.
	thief := mustKey(t)
	stolen := []PublicKey{{Key: pub(rel1), Role: RoleRelease}, {Key: pub(thief), Role: RoleOrigin}}
	rec, _ := NewRotation(RoleOrigin, "", org1, pub(org2), now, rel1)
	out, _, applied2, err := ApplyRotation(stolen, rec)
	if err != nil || !applied2 {
		t.Fatal(err)
	}
	ok = KeysFor(out, RoleOrigin)
	if len(ok) != 1 || !ok[0].Equal(pub(org2)) {
		t.Fatalf("recovery left origin keys %v", ok)
	}
	// But a release rotation cannot be vouched for by an origin key.
	sneaky := Seal(r12.Signed, org1)
	if _, _, _, err := ApplyRotation(trusted, sneaky); err == nil {
		t.Fatal("origin key rotated a release key")
	}
	if _, _, err := ApplyRotations(trusted, make([]*Envelope, MaxRotations+1)); err == nil {
		t.Fatal("unbounded chain accepted")
	}
}

func TestRotationDecodeBounds(t *testing.T) {
	if _, err := DecodeRotation([]byte(strings.Repeat(" ", MaxRotationBytes+1))); err == nil {
		t.Fatal("oversized statement accepted")
	}
	for _, bad := range []string{
		`{"type":"capstan.rotation/v1","role":"root","old":"0011223344556677","new":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`,
		`{"type":"capstan.rotation/v1","role":"release","old":"short","new":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`,
		`{"type":"capstan.rotation/v1","role":"release","old":"0011223344556677","new":"AAAA"}`,
		`{"type":"capstan.channel/v1","role":"release","old":"0011223344556677","new":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`,
	} {
		if _, err := DecodeRotation([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func FuzzDecodeRotation(f *testing.F) {
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	env, _ := NewRotation(RoleRelease, "app", k1, pub(k2), time.Now())
	f.Add([]byte(env.Signed))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRotation(b)
		if err == nil && r.Validate() != nil {
			t.Fatal("decoded an invalid statement")
		}
	})
}
