package release

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestValidatePath(t *testing.T) {
	ok := []string{"index.html", "assets/app-3f9c1a.js", "a/b/c/d.txt", "ünïcode/файл.js", "..hidden", "a..b"}
	bad := []string{"", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", `a\b`, "C:/x", "a\x00b", "\xff\xfe", strings.Repeat("a", MaxPathLen+1)}
	for _, p := range ok {
		if err := ValidatePath(p); err != nil {
			t.Errorf("ValidatePath(%q) = %v, want ok", p, err)
		}
	}
	for _, p := range bad {
		if err := ValidatePath(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidatePath(%q) = %v, want ErrInvalid", p, err)
		}
	}
}

func TestParseHash(t *testing.T) {
	h := Sum([]byte("x"))
	p, err := ParseHash(h.String())
	if err != nil || p != h {
		t.Fatalf("round trip: %v", err)
	}
	for _, s := range []string{"", "abc", strings.ToUpper(h.String()), h.String() + "0", "g" + h.String()[1:]} {
		if _, err := ParseHash(s); err == nil {
			t.Errorf("ParseHash(%q) accepted", s)
		}
	}
}

func testManifest() *Manifest {
	return &Manifest{Type: TypeRelease, App: "com.example.app", Version: "1.2.3", Files: []File{
		{Path: "index.html", Size: 5, Mode: 0o644, SHA256: Sum([]byte("hello"))},
		{Path: "assets/a.js", Size: 1, Mode: 0o644, SHA256: Sum([]byte("a"))},
	}}
}

func TestManifestEncodeIsCanonical(t *testing.T) {
	a, err := testManifest().Encode()
	if err != nil {
		t.Fatal(err)
	}
	m := testManifest()
	m.Files[0], m.Files[1] = m.Files[1], m.Files[0]
	b, _ := m.Encode()
	if string(a) != string(b) {
		t.Fatal("file order changed the canonical encoding")
	}
	d, err := DecodeManifest(a)
	if err != nil || d.Files[0].Path != "assets/a.js" {
		t.Fatalf("decode: %v %+v", err, d)
	}
}

func TestManifestValidate(t *testing.T) {
	cases := map[string]func(m *Manifest){
		"duplicate":      func(m *Manifest) { m.Files = append(m.Files, m.Files[0]) },
		"file and dir":   func(m *Manifest) { m.Files = append(m.Files, File{Path: "index.html/x", SHA256: Sum(nil)}) },
		"bad version":    func(m *Manifest) { m.Version = "1.2" },
		"bad min native": func(m *Manifest) { m.MinNative = "latest" },
		"negative size":  func(m *Manifest) { m.Files[0].Size = -1 },
		"setuid mode":    func(m *Manifest) { m.Files[0].Mode = 0o4755 },
		"traversal":      func(m *Manifest) { m.Files[0].Path = "../../etc/passwd" },
		"bad app":        func(m *Manifest) { m.App = "a b" },
		"wrong type":     func(m *Manifest) { m.Type = TypeChannel },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := testManifest()
			mutate(m)
			m.Sort()
			if err := m.Validate(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestEnvelopeVerify(t *testing.T) {
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	pub1 := k1.Public().(ed25519.PublicKey)
	b, _ := testManifest().Encode()
	env := Seal(b, k1)
	if err := env.Verify(KeysFor([]PublicKey{{Key: pub1}}, RoleRelease)); err != nil {
		t.Fatalf("good signature: %v", err)
	}
	if err := env.Verify(KeysFor([]PublicKey{{Key: k2.Public().(ed25519.PublicKey)}}, RoleRelease)); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("other key: %v", err)
	}
	tampered := *env
	tampered.Signed = append([]byte(nil), env.Signed...)
	tampered.Signed[10] ^= 1
	if err := tampered.Verify([]ed25519.PublicKey{pub1}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered: %v", err)
	}
	unsigned := &Envelope{Signed: b}
	if err := unsigned.Verify([]ed25519.PublicKey{pub1}); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned: %v", err)
	}
}

func TestKeyFilesRoundTrip(t *testing.T) {
	k, _ := GenerateKey()
	priv, _ := EncodePrivateKey(k)
	back, err := ParsePrivateKey(priv)
	if err != nil || !back.Equal(k) {
		t.Fatalf("private key round trip: %v", err)
	}
	if _, err := LoadSigningKey(string(priv)); err != nil {
		t.Fatalf("PEM text as CAPSTAN_SIGNING_KEY: %v", err)
	}
	pub, _ := EncodePublicKey(k.Public().(ed25519.PublicKey), RoleOrigin)
	keys, err := ParsePublicKeys(append(pub, pub...))
	if err != nil || len(keys) != 2 || keys[0].Role != RoleOrigin {
		t.Fatalf("public keys: %v %+v", err, keys)
	}
	if len(KeysFor(keys, RoleRelease)) != 0 || len(KeysFor(keys, RoleOrigin)) != 2 {
		t.Fatal("KeysFor ignores roles")
	}
	if _, err := ParsePrivateKey([]byte("garbage")); err == nil {
		t.Fatal("garbage accepted as a key")
	}
}

// TestRolloutShareAndStickiness checks that the hash bucket gives the
// promised share and that raising the percentage keeps every device in.
func TestRolloutShareAndStickiness(t *testing.T) {
	rel := Sum([]byte("release"))
	in30 := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := fmt.Sprintf("device-%d", i)
		if InRollout(id, rel, 3000) {
			in30[id] = true
		}
	}
	if n := len(in30); n < 2850 || n > 3150 {
		t.Fatalf("30%% rollout took %d of 10000 devices", n)
	}
	for id := range in30 {
		if !InRollout(id, rel, 5000) {
			t.Fatalf("%s left the rollout when it grew to 50%%", id)
		}
	}
	other := Sum([]byte("another release"))
	same := 0
	for id := range in30 {
		if InRollout(id, other, 3000) {
			same++
		}
	}
	if same > 1500 {
		t.Fatalf("cohorts are not redrawn per release: %d of %d overlap", same, len(in30))
	}
}

func TestChannelTarget(t *testing.T) {
	newRel := Ref{Version: "2.0.0", ID: Sum([]byte("new"))}
	old := Ref{Version: "1.0.0", ID: Sum([]byte("old"))}
	c := &Channel{Type: TypeChannel, App: "a", Channel: "production", Release: newRel, RolloutBPS: 0, Stable: &old,
		Issued: time.Now(), Expires: time.Now().Add(time.Hour)}
	if got, ok := c.Target("d", Hash{}); !ok || got != old {
		t.Fatalf("outside the rollout: %+v", got)
	}
	if got, _ := c.Target("d", newRel.ID); got != newRel {
		t.Fatal("a device on the rollout release was moved off it")
	}
	c.RolloutBPS = FullRollout
	c.Paused = true
	if got, _ := c.Target("d", Hash{}); got != old {
		t.Fatal("a paused rollout took a new device")
	}
	if b, err := c.Encode(); err != nil || len(b) > 700 {
		t.Fatalf("encoded record is %d bytes (%v); it must stay small for gossip", len(b), err)
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
