package release

// Optional encryption of releases, so that edges and blob storage hold
// only ciphertext.
//
// Every release of an encrypting app gets a fresh 256-bit key. Each file
// is encrypted with it in 64 KiB AES-256-GCM chunks (below) and stored as
// a ciphertext blob addressed by its own SHA-256, so edges pull, verify and
// cache it like any blob. The release key is sealed to the app's X25519
// public key with HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
// AES-256-GCM, from the standard library's crypto/hpke) and travels inside
// a small index blob that also maps each manifest file to its ciphertext
// blob; the origin-signed channel record names the index by its hash.
//
// Integrity does not rest on the encryption: the device still checks every
// decrypted file against the CI-signed manifest.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// TypeSealedIndex is the document type of an encrypted release's index.
const TypeSealedIndex = "capstan.sealed/v1"

// Sizes of the chunked encryption format.
const (
	// SealChunk is the plaintext bytes per chunk: small enough that a
	// device never holds more than one chunk, large enough that the 16-byte
	// tag per chunk costs 0.02 %.
	SealChunk = 64 << 10
	// ReleaseKeySize is the size of a per-release key.
	ReleaseKeySize = 32
	sealMagic      = "CPE1"
	sealHeader     = len(sealMagic) + 8 // magic, random nonce prefix
	sealTag        = 16
	// MaxSealedIndexBytes bounds an encoded index.
	MaxSealedIndexBytes = 16 << 20
)

// ErrDecrypt is returned for ciphertext that does not decrypt (wrong key,
// tampered, truncated or extended).
var ErrDecrypt = errors.New("release: ciphertext does not decrypt")

// NewReleaseKey returns a fresh random release key.
func NewReleaseKey() ([]byte, error) {
	k := make([]byte, ReleaseKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("release: release key: %w", err)
	}
	return k, nil
}

func hpkeInfo(id Hash) []byte { return append([]byte("capstan release key v1 "), id[:]...) }

// SealKey seals a release key to an app's X25519 public key, bound to the
// release ID (a sealed key cannot be replayed for another release).
func SealKey(app *ecdh.PublicKey, id Hash, key []byte) ([]byte, error) {
	pk, err := hpke.NewDHKEMPublicKey(app)
	if err != nil {
		return nil, fmt.Errorf("release: seal key: %w", err)
	}
	ct, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), hpkeInfo(id), key)
	if err != nil {
		return nil, fmt.Errorf("release: seal key: %w", err)
	}
	return ct, nil
}

// OpenKey opens a sealed release key with the app's private key.
func OpenKey(app *ecdh.PrivateKey, id Hash, sealed []byte) ([]byte, error) {
	if len(sealed) > 256 {
		return nil, fmt.Errorf("%w: sealed key of %d bytes", ErrDecrypt, len(sealed))
	}
	sk, err := hpke.NewDHKEMPrivateKey(app)
	if err != nil {
		return nil, fmt.Errorf("release: open key: %w", err)
	}
	key, err := hpke.Open(sk, hpke.HKDFSHA256(), hpke.AES256GCM(), hpkeInfo(id), sealed)
	if err != nil || len(key) != ReleaseKeySize {
		return nil, fmt.Errorf("%w: release key (is this the app's decryption key?)", ErrDecrypt)
	}
	return key, nil
}

// SealedFile is the ciphertext blob of one manifest file.
type SealedFile struct {
	Blob Hash  `json:"blob"`
	Size int64 `json:"size"`
}

// SealedIndex carries an encrypted release's key, sealed to the app, and
// maps its files, in manifest order, to their ciphertext blobs. It is
// stored as a blob; the signed channel record names its hash, so it needs
// no signature of its own.
type SealedIndex struct {
	Type    string `json:"type"`
	Release Hash   `json:"release"`
	// Key is the release key sealed with SealKey (HPKE output).
	Key   []byte       `json:"key"`
	Files []SealedFile `json:"files"`
}

// DecodeSealedIndex parses an index with bounds.
func DecodeSealedIndex(b []byte) (*SealedIndex, error) {
	if len(b) > MaxSealedIndexBytes {
		return nil, invalid("sealed index of %d bytes is over the limit", len(b))
	}
	var x SealedIndex
	if err := json.Unmarshal(b, &x); err != nil {
		return nil, invalid("sealed index: %v", err)
	}
	if x.Type != TypeSealedIndex {
		return nil, invalid("sealed index type %q", x.Type)
	}
	if len(x.Key) == 0 || len(x.Key) > 256 {
		return nil, invalid("sealed index: sealed key of %d bytes", len(x.Key))
	}
	if len(x.Files) > MaxFiles {
		return nil, invalid("sealed index lists %d files", len(x.Files))
	}
	for _, f := range x.Files {
		if f.Size < int64(sealHeader+sealTag) {
			return nil, invalid("sealed index: blob %s of %d bytes is too small", f.Blob, f.Size)
		}
	}
	return &x, nil
}

// CipherSize is the size of the ciphertext of plain bytes.
func CipherSize(plain int64) int64 {
	chunks := plain / SealChunk
	if plain%SealChunk != 0 || plain == 0 {
		chunks++
	}
	return int64(sealHeader) + chunks*sealTag + plain
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != ReleaseKeySize {
		return nil, fmt.Errorf("release: release key is %d bytes", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// chunkNonce is the 8-byte random prefix and the chunk counter; the AAD
// marks the last chunk, so dropping or appending chunks fails to decrypt.
func chunkNonce(prefix []byte, i uint32) []byte {
	n := make([]byte, 12)
	copy(n, prefix)
	binary.BigEndian.PutUint32(n[8:], i)
	return n
}

func chunkAAD(last bool) []byte {
	if last {
		return []byte{1}
	}
	return []byte{0}
}

// Encrypt writes the ciphertext of exactly size bytes of r to w.
func Encrypt(key []byte, w io.Writer, r io.Reader, size int64) error {
	g, err := newGCM(key)
	if err != nil {
		return err
	}
	hdr := make([]byte, sealHeader)
	copy(hdr, sealMagic)
	if _, err := rand.Read(hdr[len(sealMagic):]); err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	prefix := hdr[len(sealMagic):]
	buf := make([]byte, SealChunk, SealChunk+sealTag)
	left := size
	for i := uint32(0); ; i++ {
		n := min(left, SealChunk)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("release: encrypt: %w", err)
		}
		left -= n
		last := left == 0
		if _, err := w.Write(g.Seal(buf[:0], chunkNonce(prefix, i), buf[:n], chunkAAD(last))); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}

// DecryptReader returns a reader of the plaintext of the ciphertext in r.
// It holds one chunk at a time and fails with ErrDecrypt on any change,
// truncation or extension of the ciphertext.
func DecryptReader(key []byte, r io.Reader) io.Reader {
	g, err := newGCM(key)
	return &decryptReader{g: g, r: r, err: err, buf: make([]byte, SealChunk+sealTag+1)}
}

type decryptReader struct {
	g      cipher.AEAD
	r      io.Reader
	err    error
	prefix []byte
	i      uint32
	out    []byte
	buf    []byte
	// pending is one byte read ahead, to tell the last chunk from others.
	pending []byte
	done    bool
}

// Read implements io.Reader.
func (d *decryptReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		if d.done {
			return 0, io.EOF
		}
		d.err = d.next()
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

func (d *decryptReader) next() error {
	if d.prefix == nil {
		hdr := make([]byte, sealHeader)
		if _, err := io.ReadFull(d.r, hdr); err != nil || string(hdr[:len(sealMagic)]) != sealMagic {
			return fmt.Errorf("%w: bad header", ErrDecrypt)
		}
		d.prefix = hdr[len(sealMagic):]
	}
	// Read a full chunk plus one byte: if that byte exists, this chunk is
	// not the last.
	buf := d.buf[:0]
	buf = append(buf, d.pending...)
	n, err := io.ReadFull(d.r, d.buf[len(buf):SealChunk+sealTag+1])
	buf = d.buf[:len(buf)+n]
	switch {
	case err == nil:
		d.pending = append(d.pending[:0], buf[SealChunk+sealTag])
		buf = buf[:SealChunk+sealTag]
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		d.pending, d.done = nil, true
	default:
		return err
	}
	pt, oerr := d.g.Open(buf[:0], chunkNonce(d.prefix, d.i), buf, chunkAAD(d.done))
	if oerr != nil {
		return fmt.Errorf("%w: chunk %d", ErrDecrypt, d.i)
	}
	d.i++
	d.out = pt
	return nil
}
