package capgo

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
)

// The plugin's bundle encryption ("encryption v2", checksum format "V3"):
// the developer holds an RSA private key, the app ships the public key.
// Per upload a random AES-128 key and IV encrypt the zip (CBC, PKCS#7);
// the AES key and the zip's SHA-256 are "private-encrypted" with RSA
// (PKCS#1 v1.5 type 1 padding, no DigestInfo), which is a raw signature
// the device recovers with the public key. The server stores the results
// as opaque strings and never needs the private key.

// PEM block types of the plugin's keys (PKCS#1, as `npx @capgo/cli key
// create` writes them; the Android plugin accepts only these).
const (
	PEMPrivateKey = "RSA PRIVATE KEY"
	PEMPublicKey  = "RSA PUBLIC KEY"
)

// KeyIDLen is the length of a key_id: the first characters of the public
// key's base64 body.
const KeyIDLen = 20

// Encrypted is what an encrypted upload carries besides the encrypted zip:
// the strings a device needs to decrypt and verify it.
type Encrypted struct {
	// SessionKey is base64(iv) ":" base64(RSA private-encrypt of the AES key).
	SessionKey string `json:"session_key"`
	// Checksum is hex(RSA private-encrypt of the plaintext zip's SHA-256).
	Checksum string `json:"checksum"`
	// KeyID is the first 20 characters of the public key's base64 body.
	KeyID string `json:"key_id"`
}

// Validate checks the shapes a v8 plugin accepts: two base64 parts with a
// 16-byte IV and a 256-byte RSA block, a 512-hex-character checksum (one
// 2048-bit RSA block), and a key_id of at most 20 characters.
func (e *Encrypted) Validate() error {
	iv, key, ok := strings.Cut(e.SessionKey, ":")
	if !ok {
		return errors.New("capgo: session_key must be base64(iv):base64(key)")
	}
	ivb, err := base64.StdEncoding.DecodeString(iv)
	if err != nil || len(ivb) != aes.BlockSize {
		return errors.New("capgo: session_key: the IV must be 16 bytes of base64")
	}
	kb, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(kb) != 256 {
		return errors.New("capgo: session_key: the key must be a 256-byte RSA block in base64 (RSA-2048)")
	}
	cb, err := hex.DecodeString(e.Checksum)
	if err != nil || len(cb) != 256 || strings.ToLower(e.Checksum) != e.Checksum {
		return errors.New("capgo: checksum must be 512 lowercase hex characters (an RSA-2048 block, the plugin's V3 format)")
	}
	if e.KeyID == "" || len(e.KeyID) > KeyIDLen {
		return fmt.Errorf("capgo: key_id must be 1 to %d characters", KeyIDLen)
	}
	return nil
}

// GenerateKey makes an RSA-2048 key pair in the plugin's PEM formats.
func GenerateKey() (privPEM, pubPEM []byte, err error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("capgo: generate key: %w", err)
	}
	privPEM = pem.EncodeToMemory(&pem.Block{Type: PEMPrivateKey, Bytes: x509.MarshalPKCS1PrivateKey(k)})
	pubPEM = pem.EncodeToMemory(&pem.Block{Type: PEMPublicKey, Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})
	return privPEM, pubPEM, nil
}

// ParsePrivateKey reads a PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 PEM key.
func ParsePrivateKey(b []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("capgo: private key: no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("capgo: private key: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("capgo: private key is not RSA")
	}
	return rk, nil
}

// ParsePublicKey reads a PKCS#1 ("RSA PUBLIC KEY") or SPKI PEM key.
func ParsePublicKey(b []byte) (*rsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("capgo: public key: no PEM block")
	}
	if k, err := x509.ParsePKCS1PublicKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("capgo: public key: %w", err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("capgo: public key is not RSA")
	}
	return rk, nil
}

// KeyID returns the key_id of a public key: the first 20 characters of its
// PKCS#1 PEM body, as the plugin computes it from the configured key.
func KeyID(pub *rsa.PublicKey) string {
	body := base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(pub))
	return body[:KeyIDLen]
}

// KeyIDFromPEM returns the key_id of a public key as written in a PEM file
// (or in capacitor.config's publicKey): header, footer and whitespace
// removed, first 20 characters.
func KeyIDFromPEM(pubPEM string) string {
	var sb strings.Builder
	for _, line := range strings.Split(pubPEM, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "-----") {
			continue
		}
		sb.WriteString(line)
	}
	s := sb.String()
	if len(s) > KeyIDLen {
		s = s[:KeyIDLen]
	}
	return s
}

// EncryptBundle encrypts a zip for the plugin with the developer's private
// key, writing the ciphertext to dst. It returns the strings to store with
// the release.
func EncryptBundle(priv *rsa.PrivateKey, zip io.Reader, dst io.Writer) (*Encrypted, error) {
	plain, err := io.ReadAll(zip)
	if err != nil {
		return nil, fmt.Errorf("capgo: encrypt: read zip: %w", err)
	}
	var key, iv [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("capgo: encrypt: %w", err)
	}
	if _, err := rand.Read(iv[:]); err != nil {
		return nil, fmt.Errorf("capgo: encrypt: %w", err)
	}
	digest := sha256.Sum256(plain)
	sealedKey, err := rsa.SignPKCS1v15(nil, priv, crypto.Hash(0), key[:])
	if err != nil {
		return nil, fmt.Errorf("capgo: encrypt session key: %w", err)
	}
	sealedSum, err := rsa.SignPKCS1v15(nil, priv, crypto.Hash(0), digest[:])
	if err != nil {
		return nil, fmt.Errorf("capgo: encrypt checksum: %w", err)
	}
	block, _ := aes.NewCipher(key[:])
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	buf := append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv[:]).CryptBlocks(buf, buf)
	if _, err := dst.Write(buf); err != nil {
		return nil, fmt.Errorf("capgo: encrypt: write: %w", err)
	}
	return &Encrypted{
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
		return nil, fmt.Errorf("capgo: RSA block of %d bytes, want %d", len(block), k)
	}
	c := new(big.Int).SetBytes(block)
	if c.Cmp(pub.N) >= 0 {
		return nil, errors.New("capgo: RSA block out of range")
	}
	m := new(big.Int).Exp(c, big.NewInt(int64(pub.E)), pub.N)
	em := m.FillBytes(make([]byte, k))
	if em[0] != 0 || em[1] != 1 {
		return nil, errors.New("capgo: RSA block has no type-1 padding")
	}
	i := 2
	for i < len(em) && em[i] == 0xff {
		i++
	}
	if i < 10 || i >= len(em) || em[i] != 0 {
		return nil, errors.New("capgo: RSA block has bad padding")
	}
	return em[i+1:], nil
}

// DecryptSession recovers the AES key and IV from a session_key.
func DecryptSession(pub *rsa.PublicKey, sessionKey string) (key, iv []byte, err error) {
	ivs, ks, ok := strings.Cut(sessionKey, ":")
	if !ok {
		return nil, nil, errors.New("capgo: session_key has no ':'")
	}
	if iv, err = base64.StdEncoding.DecodeString(ivs); err != nil || len(iv) != aes.BlockSize {
		return nil, nil, errors.New("capgo: session_key: bad IV")
	}
	kb, err := base64.StdEncoding.DecodeString(ks)
	if err != nil {
		return nil, nil, fmt.Errorf("capgo: session_key: %w", err)
	}
	if key, err = PublicRecover(pub, kb); err != nil {
		return nil, nil, err
	}
	if len(key) != 16 && len(key) != 24 && len(key) != 32 {
		return nil, nil, fmt.Errorf("capgo: session key of %d bytes", len(key))
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
			return "", errors.New("capgo: checksum is neither hex nor base64")
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
		return nil, fmt.Errorf("capgo: %w", err)
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("capgo: ciphertext is not whole AES blocks")
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ct)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > aes.BlockSize || pad > len(out) {
		return nil, errors.New("capgo: bad PKCS#7 padding")
	}
	for _, c := range out[len(out)-pad:] {
		if int(c) != pad {
			return nil, errors.New("capgo: bad PKCS#7 padding")
		}
	}
	return out[:len(out)-pad], nil
}
