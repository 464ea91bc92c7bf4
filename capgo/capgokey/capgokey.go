// Package capgokey is the key side of the @capgo/capacitor-updater
// plugin's bundle encryption: RSA key pairs in the plugin's PEM formats,
// the encryption CI runs before an upload (capstan upload --capgo-key), and
// the recovery a device performs (used by tests and the fake device). Edges
// and origins do not import it: they store and serve the resulting strings
// without ever holding a private key.
package capgokey

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"

	"github.com/capstan-ota/capstan/capgo"
)

// PEM block types of the plugin's keys (PKCS#1, as `npx @capgo/cli key
// create` writes them; the Android plugin accepts only these).
const (
	PEMPrivateKey = "RSA PRIVATE KEY"
	PEMPublicKey  = "RSA PUBLIC KEY"
)

// GenerateKey makes an RSA-2048 key pair in the plugin's PEM formats.
func GenerateKey() (privPEM, pubPEM []byte, err error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("capgokey: generate key: %w", err)
	}
	privPEM = pem.EncodeToMemory(&pem.Block{Type: PEMPrivateKey, Bytes: x509.MarshalPKCS1PrivateKey(k)})
	pubPEM = pem.EncodeToMemory(&pem.Block{Type: PEMPublicKey, Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})
	return privPEM, pubPEM, nil
}

// ParsePrivateKey reads a PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 PEM key.
func ParsePrivateKey(b []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("capgokey: private key: no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("capgokey: private key: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("capgokey: private key is not RSA")
	}
	return rk, nil
}

// ParsePublicKey reads a PKCS#1 ("RSA PUBLIC KEY") or SPKI PEM key.
func ParsePublicKey(b []byte) (*rsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("capgokey: public key: no PEM block")
	}
	if k, err := x509.ParsePKCS1PublicKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("capgokey: public key: %w", err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("capgokey: public key is not RSA")
	}
	return rk, nil
}

// KeyID returns the key_id of a public key: the first 20 characters of its
// PKCS#1 PEM body, as the plugin computes it from the configured key.
func KeyID(pub *rsa.PublicKey) string {
	body := base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(pub))
	return body[:capgo.KeyIDLen]
}

// EncryptBundle encrypts a zip for the plugin with the developer's private
// key, writing the ciphertext to dst. It returns the strings to store with
// the release.
func EncryptBundle(priv *rsa.PrivateKey, zip io.Reader, dst io.Writer) (*capgo.Encrypted, error) {
	plain, err := io.ReadAll(zip)
	if err != nil {
		return nil, fmt.Errorf("capgokey: encrypt: read zip: %w", err)
	}
	var key, iv [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("capgokey: encrypt: %w", err)
	}
	if _, err := rand.Read(iv[:]); err != nil {
		return nil, fmt.Errorf("capgokey: encrypt: %w", err)
	}
	digest := sha256.Sum256(plain)
	sealedKey, err := rsa.SignPKCS1v15(nil, priv, crypto.Hash(0), key[:])
	if err != nil {
		return nil, fmt.Errorf("capgokey: encrypt session key: %w", err)
	}
	sealedSum, err := rsa.SignPKCS1v15(nil, priv, crypto.Hash(0), digest[:])
	if err != nil {
		return nil, fmt.Errorf("capgokey: encrypt checksum: %w", err)
	}
	block, _ := aes.NewCipher(key[:])
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	buf := append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv[:]).CryptBlocks(buf, buf)
	if _, err := dst.Write(buf); err != nil {
		return nil, fmt.Errorf("capgokey: encrypt: write: %w", err)
	}
	return &capgo.Encrypted{
		SessionKey: base64.StdEncoding.EncodeToString(iv[:]) + ":" + base64.StdEncoding.EncodeToString(sealedKey),
		Checksum:   hex.EncodeToString(sealedSum),
		KeyID:      KeyID(&priv.PublicKey),
	}, nil
}

// PublicRecover undoes a "private encrypt" with the public key: the raw
// RSA public operation, then the PKCS#1 v1.5 type-1 padding
// (00 01 FF…FF 00) is checked and stripped. This is what the plugin does
// to recover the AES key and the checksum.
func PublicRecover(pub *rsa.PublicKey, block []byte) ([]byte, error) {
	k := pub.Size()
	if len(block) != k {
		return nil, fmt.Errorf("capgokey: RSA block of %d bytes, want %d", len(block), k)
	}
	c := new(big.Int).SetBytes(block)
	if c.Cmp(pub.N) >= 0 {
		return nil, errors.New("capgokey: RSA block out of range")
	}
	m := new(big.Int).Exp(c, big.NewInt(int64(pub.E)), pub.N)
	em := m.FillBytes(make([]byte, k))
	if em[0] != 0 || em[1] != 1 {
		return nil, errors.New("capgokey: RSA block has no type-1 padding")
	}
	i := 2
	for i < len(em) && em[i] == 0xff {
		i++
	}
	if i < 10 || i >= len(em) || em[i] != 0 {
		return nil, errors.New("capgokey: RSA block has bad padding")
	}
	return em[i+1:], nil
}

// DecryptSession recovers the AES key and IV from a session_key.
func DecryptSession(pub *rsa.PublicKey, sessionKey string) (key, iv []byte, err error) {
	ivs, ks, ok := strings.Cut(sessionKey, ":")
	if !ok {
		return nil, nil, errors.New("capgokey: session_key has no ':'")
	}
	if iv, err = base64.StdEncoding.DecodeString(ivs); err != nil || len(iv) != aes.BlockSize {
		return nil, nil, errors.New("capgokey: session_key: bad IV")
	}
	kb, err := base64.StdEncoding.DecodeString(ks)
	if err != nil {
		return nil, nil, fmt.Errorf("capgokey: session_key: %w", err)
	}
	if key, err = PublicRecover(pub, kb); err != nil {
		return nil, nil, err
	}
	if len(key) != 16 && len(key) != 24 && len(key) != 32 {
		return nil, nil, fmt.Errorf("capgokey: session key of %d bytes", len(key))
	}
	return key, iv, nil
}

// DecryptChecksum recovers the hex SHA-256 from an encrypted checksum:
// hex input (V3) as the v8 plugin reads it, or base64 (V2), whose recovered
// bytes the v8 plugin also hex-encodes.
func DecryptChecksum(pub *rsa.PublicKey, checksum string) (string, error) {
	b, err := hex.DecodeString(checksum)
	if err != nil {
		if b, err = base64.StdEncoding.DecodeString(checksum); err != nil {
			return "", errors.New("capgokey: checksum is neither hex nor base64")
		}
	}
	sum, err := PublicRecover(pub, b)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(sum), nil
}

// DecryptAESCBC decrypts AES-CBC ciphertext and strips PKCS#7 padding.
func DecryptAESCBC(key, iv, ct []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("capgokey: %w", err)
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("capgokey: ciphertext is not whole AES blocks")
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ct)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > aes.BlockSize || pad > len(out) {
		return nil, errors.New("capgokey: bad PKCS#7 padding")
	}
	for _, c := range out[len(out)-pad:] {
		if int(c) != pad {
			return nil, errors.New("capgokey: bad PKCS#7 padding")
		}
	}
	return out[:len(out)-pad], nil
}
