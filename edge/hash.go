package edge

import (
	"crypto/sha256"
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
