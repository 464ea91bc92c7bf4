package release

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Envelope is a signed document: the exact signed bytes plus detached
// ed25519 signatures over them (the TUF layout). Verifiers check the bytes
// as received, so there is never a question of re-encoding.
type Envelope struct {
	Signed     json.RawMessage `json:"signed"`
	Signatures []Signature     `json:"signatures"`
}

// Signature is one ed25519 signature and the ID of the key that made it.
type Signature struct {
	KeyID string `json:"keyid"`
	Sig   []byte `json:"sig"`
}

// MaxSignatures bounds the signatures an envelope may carry.
const MaxSignatures = 8

// Errors a verifier returns; callers branch on them with errors.Is.
var (
	ErrUnsigned     = errors.New("release: document is not signed by a trusted key")
	ErrBadSignature = errors.New("release: signature does not verify")
)

// KeyID names a public key: the first 8 bytes of the SHA-256 of the raw key,
// in hex.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// Seal wraps signed bytes in an envelope, signing them with each key.
func Seal(signed []byte, keys ...ed25519.PrivateKey) *Envelope {
	env := &Envelope{Signed: append(json.RawMessage(nil), signed...)}
	for _, k := range keys {
		env.Sign(k)
	}
	return env
}

// Sign adds a signature by key, replacing an earlier one by the same key.
func (e *Envelope) Sign(key ed25519.PrivateKey) {
	id := KeyID(key.Public().(ed25519.PublicKey))
	sig := Signature{KeyID: id, Sig: ed25519.Sign(key, e.Signed)}
	for i := range e.Signatures {
		if e.Signatures[i].KeyID == id {
			e.Signatures[i] = sig
			return
		}
	}
	e.Signatures = append(e.Signatures, sig)
}

// ID is the SHA-256 of the signed bytes: a release's ID.
func (e *Envelope) ID() Hash { return Sum(e.Signed) }

// Verify checks that at least one signature from a key in trusted verifies.
// A signature whose key ID is unknown is ignored; a signature by a trusted
// key that does not verify is an error (a tampered document).
func (e *Envelope) Verify(trusted []ed25519.PublicKey) error {
	if len(e.Signatures) > MaxSignatures {
		return fmt.Errorf("%w: %d signatures", ErrBadSignature, len(e.Signatures))
	}
	ok := false
	for _, s := range e.Signatures {
		for _, k := range trusted {
			if KeyID(k) != s.KeyID {
				continue
			}
			if len(s.Sig) != ed25519.SignatureSize || !ed25519.Verify(k, e.Signed, s.Sig) {
				return fmt.Errorf("%w: key %s", ErrBadSignature, s.KeyID)
			}
			ok = true
		}
	}
	if !ok {
		return ErrUnsigned
	}
	return nil
}

// DecodeEnvelope parses an envelope with bounds.
func DecodeEnvelope(b []byte) (*Envelope, error) {
	if len(b) > MaxManifestBytes {
		return nil, invalid("envelope of %d bytes is over the limit", len(b))
	}
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, invalid("envelope: %v", err)
	}
	if len(e.Signed) == 0 {
		return nil, invalid("envelope has no signed document")
	}
	if len(e.Signatures) > MaxSignatures {
		return nil, invalid("envelope has %d signatures, limit %d", len(e.Signatures), MaxSignatures)
	}
	return &e, nil
}

// Manifest decodes the envelope's signed bytes as a release manifest.
func (e *Envelope) Manifest() (*Manifest, error) { return DecodeManifest(e.Signed) }

// Channel decodes the envelope's signed bytes as a channel record.
func (e *Envelope) Channel() (*Channel, error) { return DecodeChannel(e.Signed) }
