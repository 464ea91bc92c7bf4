package gossip

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/release"
)

// TestKeyFileRoundTrip: the origin's file holds its gossip key and public
// key, is written 0600 once and never replaced, and a second gossip line
// (a rotation) is read in order.
func TestKeyFileRoundTrip(t *testing.T) {
	k, _ := release.GenerateKey()
	pub := k.Public().(ed25519.PublicKey)
	p := filepath.Join(t.TempDir(), "cluster.key")
	created, err := CreateKeyFile(p, nil, pub)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	again, err := CreateKeyFile(p, nil, pub)
	if err != nil || again {
		t.Fatalf("a second create replaced the file: %v %v", again, err)
	}
	kf, err := ReadKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(kf.Keys) != 1 || len(kf.Keys[0]) != 32 || len(kf.OriginKeys) != 1 || !kf.OriginKeys[0].Key.Equal(pub) {
		t.Fatalf("read back %+v", kf)
	}
	second := bytes.Repeat([]byte{9}, 32)
	kf.Keys = append(kf.Keys, second)
	b, _ := kf.Encode()
	kf2, err := ParseKeyFile(b)
	if err != nil || len(kf2.Keys) != 2 || !bytes.Equal(kf2.Keys[1], second) {
		t.Fatalf("two keys: %+v %v", kf2, err)
	}
	if t1, t2 := kf2.EventsTokens(), kf.EventsTokens(); len(t1) != 2 || t1[0] != t2[0] || t1[0] == t1[1] || strings.Contains(t1[0], string(second)) {
		t.Fatalf("events tokens %v", t1)
	}
	for _, bad := range []string{"", "gossip-key: not base64!", "gossip-key: AAAA", strings.Repeat("gossip-key: "+strings.Repeat("A", 44)+"\n", MaxClusterKeys+1)} {
		if _, err := ParseKeyFile([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// FuzzParseKeyFile: no input makes the parser panic, and what it accepts
// has between one and MaxClusterKeys valid AES keys.
func FuzzParseKeyFile(f *testing.F) {
	k, _ := release.GenerateKey()
	kf := &KeyFile{Keys: [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)},
		OriginKeys: []release.PublicKey{{Key: k.Public().(ed25519.PublicKey), Role: release.RoleOrigin}}}
	b, _ := kf.Encode()
	f.Add(b)
	f.Add([]byte("gossip-key: " + strings.Repeat("A", 44) + "\n"))
	f.Add([]byte("gossip-key:\n-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kf, err := ParseKeyFile(b)
		if err != nil {
			return
		}
		if len(kf.Keys) == 0 || len(kf.Keys) > MaxClusterKeys {
			t.Fatalf("%d keys", len(kf.Keys))
		}
		for _, k := range kf.Keys {
			if checkKey(k) != nil {
				t.Fatalf("accepted a %d-byte key", len(k))
			}
		}
	})
}
