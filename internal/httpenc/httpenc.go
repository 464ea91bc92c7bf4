// Package httpenc compresses JSON answers for clients that accept it
// (Accept-Encoding: zstd, br, gzip), for the edge (fasthttp) and the origin
// (net/http) alike. Answers of at most MinSize bytes go out as they are:
// below that the codec's framing eats most of the gain.
//
// Immutable answers (a check answer is built once per channel record) keep
// their compressed forms in a Variants, computed once at the best level;
// others are compressed per request at a fast level.
package httpenc

import (
	"bytes"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// MinSize is the largest answer sent uncompressed, in bytes.
const MinSize = 1024

// Encodings, in the order of preference when a client accepts several:
// zstd and brotli make JSON of a few KB 10–20 % smaller than gzip.
const (
	Zstd   = "zstd"
	Brotli = "br"
	Gzip   = "gzip"
)

var preference = []string{Zstd, Brotli, Gzip}

// Set is a set of encodings a client accepts.
type Set uint8

// Accepted parses an Accept-Encoding header value. It honours q=0
// (refused); "*" stands for gzip.
func Accepted(accept string) Set {
	var set Set
	if accept == "" {
		return 0
	}
	for part := range strings.SplitSeq(accept, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if refused(params) {
			continue
		}
		switch name {
		case Zstd:
			set |= 1 << 0
		case Brotli:
			set |= 1 << 1
		case Gzip, "x-gzip", "*":
			set |= 1 << 2
		}
	}
	return set
}

// AcceptedBytes is Accepted for a header value held as bytes (fasthttp's
// Peek); it does not allocate.
func AcceptedBytes(accept []byte) Set {
	return Accepted(unsafe.String(unsafe.SliceData(accept), len(accept)))
}

// Preferred returns the encoding to compress a fresh answer with: zstd,
// then br, then gzip, whatever the client's order (the q-values clients
// send rarely rank these three); "" for none.
func (s Set) Preferred() string {
	for i, e := range preference {
		if s&(1<<i) != 0 {
			return e
		}
	}
	return ""
}

// Choose returns the encoding to answer with for an Accept-Encoding header
// value, or "" for none: Accepted(accept).Preferred().
func Choose(accept string) string { return Accepted(accept).Preferred() }

// ChooseBytes is Choose for a header value held as bytes; it does not
// allocate.
func ChooseBytes(accept []byte) string { return AcceptedBytes(accept).Preferred() }

// refused reports whether an Accept-Encoding entry's parameters say q=0.
func refused(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "q") {
			v = strings.TrimRight(strings.TrimSpace(v), "0")
			return v == "" || v == "0." || v == "0"
		}
	}
	return false
}

// Level says how hard to compress.
type Level int

const (
	// Fast is for answers built per request.
	Fast Level = iota
	// Best is for answers built once and sent many times.
	Best
)

// The zstd encoders are stateless for EncodeAll and safe for concurrent
// use, so one per level serves every server in the process (like a codec
// table, nothing in them changes after creation). A 1 MiB window bounds
// their memory: answers are far smaller.
var (
	zstdOnce           sync.Once
	zstdFast, zstdBest *zstd.Encoder
)

func zstdEncoder(l Level) *zstd.Encoder {
	zstdOnce.Do(func() {
		zstdFast, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(1<<20),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
		zstdBest, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithWindowSize(1<<20),
			zstd.WithEncoderConcurrency(1))
	})
	if l == Best {
		return zstdBest
	}
	return zstdFast
}

// Encode returns body compressed with enc ("" returns body as is).
func Encode(enc string, body []byte, l Level) []byte {
	switch enc {
	case Zstd:
		return zstdEncoder(l).EncodeAll(body, make([]byte, 0, len(body)/2+64))
	case Brotli:
		q := 5
		if l == Best {
			q = brotli.BestCompression
		}
		var b bytes.Buffer
		w := brotli.NewWriterLevel(&b, q)
		w.Write(body)
		w.Close()
		return b.Bytes()
	case Gzip:
		lv := gzip.DefaultCompression
		if l == Best {
			lv = gzip.BestCompression
		}
		var b bytes.Buffer
		w, _ := gzip.NewWriterLevel(&b, lv)
		w.Write(body)
		w.Close()
		return b.Bytes()
	}
	return body
}

// Variants holds the compressed forms of one immutable body, each computed
// on first use at the best level. The zero value is ready to use.
type Variants struct {
	mu sync.Mutex // guards forms
	// forms[i] is the body encoded with preference[i].
	forms [3][]byte
	// smallest[set] is Smallest's answer for an accepted set, once known:
	// every device asks for the same answer, so after the first the lookup
	// takes no lock.
	smallest [8]atomic.Pointer[variant]
}

// variant is one encoded form of a body.
type variant struct {
	enc  string
	body []byte
}

// Get returns body encoded with enc, computing it once. It returns body
// itself for "" or a body of at most MinSize bytes.
func (v *Variants) Get(enc string, body []byte) []byte {
	if enc == "" || len(body) <= MinSize {
		return body
	}
	i := index(enc)
	if i < 0 {
		return body
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.form(i, body)
}

func (v *Variants) form(i int, body []byte) []byte {
	if v.forms[i] == nil {
		v.forms[i] = Encode(preference[i], body, Best)
	}
	return v.forms[i]
}

// Smallest returns the smallest form of body among the encodings in set,
// each computed once, and its encoding; body itself and "" when none is
// smaller. For an answer built once and sent to every device, whatever its
// size: an update answer is under 1 KB, and brotli's built-in dictionary
// still takes a third off it.
func (v *Variants) Smallest(set Set, body []byte) (string, []byte) {
	set &= 7
	if set == 0 {
		return "", body
	}
	if c := v.smallest[set].Load(); c != nil {
		return c.enc, c.body
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	enc, out := "", body
	for i := range preference {
		if set&(1<<i) == 0 {
			continue
		}
		if f := v.form(i, body); len(f) < len(out) {
			enc, out = preference[i], f
		}
	}
	v.smallest[set].Store(&variant{enc, out})
	return enc, out
}

func index(enc string) int {
	for i, e := range preference {
		if e == enc {
			return i
		}
	}
	return -1
}
