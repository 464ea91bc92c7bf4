package release

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
)

func TestSealRoundTrip(t *testing.T) {
	key, _ := NewReleaseKey()
	for _, size := range []int{0, 1, SealChunk - 1, SealChunk, SealChunk + 1, 3*SealChunk + 7} {
		plain := make([]byte, size)
		rand.Read(plain)
		var ct bytes.Buffer
		if err := Encrypt(key, &ct, bytes.NewReader(plain), int64(size)); err != nil {
			t.Fatal(err)
		}
		if int64(ct.Len()) != CipherSize(int64(size)) {
			t.Fatalf("size %d: ciphertext %d, CipherSize %d", size, ct.Len(), CipherSize(int64(size)))
		}
		got, err := io.ReadAll(DecryptReader(key, bytes.NewReader(ct.Bytes())))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("size %d: round trip failed: %v", size, err)
		}
		if bytes.Contains(ct.Bytes(), plain) && size > 16 {
			t.Fatal("plaintext visible in ciphertext")
		}
		bad := func(name string, b []byte) {
			if _, err := io.ReadAll(DecryptReader(key, bytes.NewReader(b))); !errors.Is(err, ErrDecrypt) {
				t.Errorf("size %d, %s: err = %v", size, name, err)
			}
		}
		c := ct.Bytes()
		flipped := bytes.Clone(c)
		flipped[len(flipped)-1] ^= 1
		bad("flipped", flipped)
		bad("truncated", c[:len(c)-1])
		if size > SealChunk {
			bad("cut at a chunk boundary", c[:sealHeader+SealChunk+sealTag])
		}
		bad("extended", append(bytes.Clone(c), make([]byte, sealTag)...))
		other, _ := NewReleaseKey()
		if _, err := io.ReadAll(DecryptReader(other, bytes.NewReader(c))); !errors.Is(err, ErrDecrypt) {
			t.Errorf("wrong key: %v", err)
		}
	}
}

func TestSealKeyBoundToRelease(t *testing.T) {
	app, _ := GenerateBoxKey()
	key, _ := NewReleaseKey()
	id := Sum([]byte("release"))
	sealed, err := SealKey(app.PublicKey(), id, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenKey(app, id, sealed)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("open: %v", err)
	}
	if _, err := OpenKey(app, Sum([]byte("other")), sealed); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("opened for another release: %v", err)
	}
	stranger, _ := GenerateBoxKey()
	if _, err := OpenKey(stranger, id, sealed); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("opened with another app's key: %v", err)
	}
	pemPub, _ := EncodeBoxPublicKey(app.PublicKey())
	pemPriv, _ := EncodeBoxPrivateKey(app)
	p, err := ParseBoxPublicKey(pemPub)
	if err != nil || !p.Equal(app.PublicKey()) {
		t.Fatal(err)
	}
	k, err := ParseBoxPrivateKey(pemPriv)
	if err != nil || !k.Equal(app) {
		t.Fatal(err)
	}
}

func FuzzDecryptReader(f *testing.F) {
	key := bytes.Repeat([]byte{7}, ReleaseKeySize)
	var ct bytes.Buffer
	Encrypt(key, &ct, bytes.NewReader([]byte("hello, world")), 12)
	f.Add(ct.Bytes())
	f.Add([]byte("CPE1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := io.Copy(io.Discard, DecryptReader(key, bytes.NewReader(b)))
		if err == nil && n > int64(len(b)) {
			t.Fatalf("%d plaintext bytes from %d ciphertext bytes", n, len(b))
		}
	})
}

func FuzzDecodeSealedIndex(f *testing.F) {
	f.Add([]byte(`{"type":"capstan.sealed/v1","release":"` + Sum(nil).String() + `","key":"AAAA","files":[{"blob":"` + Sum(nil).String() + `","size":40}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := DecodeSealedIndex(b)
		if err == nil && (x.Type != TypeSealedIndex || len(x.Files) > MaxFiles) {
			t.Fatal("decoded an invalid index")
		}
	})
}
