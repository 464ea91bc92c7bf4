package release

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// RoleEncrypt is the Role header of an app's X25519 encryption public key.
const RoleEncrypt = "encrypt"

// GenerateBoxKey makes a new X25519 key pair for release encryption: the
// app ships the private half, the origin seals release keys to the public
// half.
func GenerateBoxKey() (*ecdh.PrivateKey, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("release: generate encryption key: %w", err)
	}
	return k, nil
}

// EncodeBoxPrivateKey returns the PKCS#8 PEM form of an X25519 private key.
func EncodeBoxPrivateKey(k *ecdh.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("release: encode encryption key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodeBoxPublicKey returns the PKIX PEM form of an X25519 public key with
// Role RoleEncrypt.
func EncodeBoxPublicKey(k *ecdh.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("release: encode encryption public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{"Role": RoleEncrypt}, Bytes: der}), nil
}

// ParseBoxPublicKey reads the first PEM X25519 public key in b.
func ParseBoxPublicKey(b []byte) (*ecdh.PublicKey, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, invalid("no PEM X25519 \"PUBLIC KEY\" block found (make one with `capstan keys gen --encryption`)")
		}
		if blk.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, invalid("encryption public key: %v", err)
		}
		ek, ok := k.(*ecdh.PublicKey)
		if !ok || ek.Curve() != ecdh.X25519() {
			return nil, invalid("encryption public key is not X25519")
		}
		return ek, nil
	}
}

// ParseBoxPrivateKey reads a PKCS#8 PEM X25519 private key.
func ParseBoxPrivateKey(b []byte) (*ecdh.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, invalid("decryption key: no PEM \"PRIVATE KEY\" block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, invalid("decryption key: %v", err)
	}
	ek, ok := k.(*ecdh.PrivateKey)
	if !ok || ek.Curve() != ecdh.X25519() {
		return nil, invalid("decryption key is not X25519")
	}
	return ek, nil
}

// LoadBoxPrivateKey reads an X25519 private key from PEM text or a file.
func LoadBoxPrivateKey(value string) (*ecdh.PrivateKey, error) {
	if strings.Contains(value, "-----BEGIN") {
		return ParseBoxPrivateKey([]byte(value))
	}
	b, err := os.ReadFile(value)
	if err != nil {
		return nil, fmt.Errorf("release: read decryption key: %w", err)
	}
	return ParseBoxPrivateKey(b)
}
