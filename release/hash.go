package release

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// Hash is a SHA-256 digest. It marshals as 64 lowercase hex characters.
type Hash [32]byte

// ZeroHash is the hash of nothing: the base of a full download.
var ZeroHash Hash

// Sum returns the SHA-256 of b.
func Sum(b []byte) Hash { return Hash(sha256.Sum256(b)) }

// String returns the lowercase hex form.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is the zero hash.
func (h Hash) IsZero() bool { return h == ZeroHash }

// MarshalText implements encoding.TextMarshaler.
func (h Hash) MarshalText() ([]byte, error) {
	out := make([]byte, 64)
	hex.Encode(out, h[:])
	return out, nil
}

// UnmarshalText implements encoding.TextUnmarshaler; it accepts exactly 64
// lowercase hex characters so that a hash has one spelling only.
func (h *Hash) UnmarshalText(b []byte) error {
	p, err := ParseHash(string(b))
	if err != nil {
		return err
	}
	*h = p
	return nil
}

// ErrBadHash is returned for a string that is not 64 lowercase hex characters.
var ErrBadHash = errors.New("release: hash must be 64 lowercase hex characters")

// ParseHash parses the lowercase hex form of a hash.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 64 {
		return h, fmt.Errorf("%w: got %d characters", ErrBadHash, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return h, ErrBadHash
		}
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, ErrBadHash
	}
	return h, nil
}
