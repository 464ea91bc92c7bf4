package capgo

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// The plugin's bundle encryption ("encryption v2", checksum format "V3"):
// the developer holds an RSA private key, the app ships the public key.
// Per upload a random AES-128 key and IV encrypt the zip (CBC, PKCS#7);
// the AES key and the zip's SHA-256 are "private-encrypted" with RSA
// (PKCS#1 v1.5 type 1 padding, no DigestInfo), which is a raw signature
// the device recovers with the public key. The server stores the results
// as opaque strings and never needs the private key. The key side (key
// pairs, encryption in CI, recovery on a device) is package capgokey, so
// that edges and origins link no signing code.

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
	if err != nil || len(ivb) != 16 {
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
