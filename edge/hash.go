package edge

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"

	"github.com/capstan-ota/capstan/release"
)

type hasher struct{ hash.Hash }

func newHasher() hasher { return hasher{sha256.New()} }

func (h hasher) sum() release.Hash {
	var out release.Hash
	h.Sum(out[:0])
	return out
}

// parseHashBytes parses a lowercase hex hash held as bytes (a request path
// or query value) without allocating.
func parseHashBytes(b []byte) (release.Hash, bool) {
	var h release.Hash
	if len(b) != 64 {
		return h, false
	}
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return h, false
		}
	}
	_, err := hex.Decode(h[:], b)
	return h, err == nil
}
