package release

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// Key roles, written as the "Role" header of a PEM public key block so that
// one trust file can hold the release key (CI) and the origin key.
const (
	RoleRelease = "release"
	RoleOrigin  = "origin"
)

// GenerateKey makes a new ed25519 key pair.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("release: generate key: %w", err)
	}
	return priv, nil
}

// EncodePrivateKey returns the PKCS#8 PEM form of a private key.
func EncodePrivateKey(k ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("release: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodePublicKey returns the PKIX PEM form of a public key with a Role
// header (RoleRelease or RoleOrigin) and its key ID.
func EncodePublicKey(k ed25519.PublicKey, role string) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("release: encode public key: %w", err)
	}
	h := map[string]string{"Key-Id": KeyID(k)}
	if role != "" {
		h["Role"] = role
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: h, Bytes: der}), nil
}

// ParsePrivateKey reads a PKCS#8 PEM ed25519 private key.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, invalid("signing key: no PEM \"PRIVATE KEY\" block (make one with `capstan keys gen`)")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, invalid("signing key: %v", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, invalid("signing key is not ed25519")
	}
	return ek, nil
}

// PublicKey is a trusted public key and its role ("" means any role).
type PublicKey struct {
	Key  ed25519.PublicKey
	Role string
}

// ParsePublicKeys reads every PEM "PUBLIC KEY" block in b.
func ParsePublicKeys(b []byte) ([]PublicKey, error) {
	var out []PublicKey
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, invalid("public key: %v", err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, invalid("public key is not ed25519")
		}
		out = append(out, PublicKey{Key: ek, Role: blk.Headers["Role"]})
		if len(out) > 64 {
			return nil, invalid("too many public keys")
		}
	}
	if len(out) == 0 {
		return nil, invalid("no PEM \"PUBLIC KEY\" block found")
	}
	return out, nil
}

// KeysFor returns the keys usable for role: those with that role or none.
func KeysFor(keys []PublicKey, role string) []ed25519.PublicKey {
	var out []ed25519.PublicKey
	for _, k := range keys {
		if k.Role == "" || k.Role == role {
			out = append(out, k.Key)
		}
	}
	return out
}

// LoadSigningKey reads a private key from value, which is either PEM text
// (as CI secret stores hand it over) or the path of a PEM file.
func LoadSigningKey(value string) (ed25519.PrivateKey, error) {
	if strings.Contains(value, "-----BEGIN") {
		return ParsePrivateKey([]byte(value))
	}
	b, err := os.ReadFile(value)
	if err != nil {
		return nil, fmt.Errorf("release: read signing key: %w", err)
	}
	return ParsePrivateKey(b)
}
