package capgokey

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/capgo"
)

func TestEncryptionRoundTrip(t *testing.T) {
	privPEM, pubPEM, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(privPEM, []byte("BEGIN RSA PRIVATE KEY")) || !bytes.Contains(pubPEM, []byte("BEGIN RSA PUBLIC KEY")) {
		t.Fatal("keys are not PKCS#1 PEM")
	}
	priv, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("zip bytes "), 1000)
	var ct bytes.Buffer
	enc, err := EncryptBundle(priv, bytes.NewReader(plain), &ct)
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.Validate(); err != nil {
		t.Fatal(err)
	}
	if enc.KeyID != capgo.KeyIDFromPEM(string(pubPEM)) || !strings.HasPrefix(enc.KeyID, "MIIBCgKCAQEA") || len(enc.KeyID) != capgo.KeyIDLen {
		t.Fatalf("key id %q", enc.KeyID)
	}
	key, iv, err := DecryptSession(pub, enc.SessionKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecryptAESCBC(key, iv, ct.Bytes())
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("decrypt: %v", err)
	}
	sum, err := DecryptChecksum(pub, enc.Checksum)
	want := sha256.Sum256(plain)
	if err != nil || sum != hex.EncodeToString(want[:]) {
		t.Fatalf("checksum %s %v", sum, err)
	}
	// Another key recovers nothing.
	_, otherPub, _ := GenerateKey()
	op, _ := ParsePublicKey(otherPub)
	if _, err := DecryptChecksum(op, enc.Checksum); err == nil {
		t.Fatal("another key recovered the checksum")
	}
	bad := *enc
	bad.Checksum = strings.ToUpper(bad.Checksum)
	if bad.Validate() == nil {
		t.Fatal("upper-case checksum accepted")
	}
	bad = *enc
	bad.SessionKey = "abc"
	if bad.Validate() == nil {
		t.Fatal("malformed session key accepted")
	}
}
