package origin

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/capstan-ota/capstan/internal/bundle"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
)

// pfxSealed maps an encrypted release to its sealed key and index:
// e/<release id> → sealedRecord.
const pfxSealed = "e/"

// sealedRecord is what the origin keeps for an encrypted release and puts
// into every channel record that names it.
type sealedRecord struct {
	Index release.Hash `json:"index"` // hash of the sealed index blob
}

// sealer encrypts the files of one upload with a fresh release key. The
// origin sees the plaintext while it streams through (it hashes it for
// the manifest) but stores only ciphertext; the release key is kept only
// sealed to the app's public key, so the origin's own storage cannot
// decrypt a release afterwards either.
type sealer struct {
	app   *ecdh.PublicKey
	key   []byte
	files []release.SealedFile
}

// newSealer returns a sealer when the app encrypts its releases, else nil.
func (s *Server) newSealer(app string) (*sealer, error) {
	a, err := s.st.app(app)
	if errors.Is(err, ErrNotFound) || (err == nil && len(a.EncryptKey) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pub, err := ecdh.X25519().NewPublicKey(a.EncryptKey)
	if err != nil {
		return nil, fmt.Errorf("origin: app %s encryption key: %w", app, err)
	}
	key, err := release.NewReleaseKey()
	if err != nil {
		return nil, err
	}
	return &sealer{app: pub, key: key}, nil
}

// hashingReader hashes what passes through it.
type hashingReader struct {
	r io.Reader
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

// Read implements io.Reader.
func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// putFile stores one file of an upload: as is, or encrypted when sl is
// non-nil. It returns the plaintext hash and size, which the manifest
// lists either way.
func (s *Server) putFile(r io.Reader, size int64, sl *sealer) (release.Hash, int64, error) {
	if sl == nil {
		return s.blobs.putNoSync(r, size, release.Hash{})
	}
	hr := &hashingReader{r: r, h: newSHA256()}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(release.Encrypt(sl.key, pw, hr, size)) }()
	ch, cn, err := s.blobs.putNoSync(pr, release.CipherSize(size), release.Hash{})
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		if errors.Is(err, bundle.ErrBadBundle) {
			return release.Hash{}, 0, err
		}
		return release.Hash{}, 0, fmt.Errorf("origin: encrypt file: %w", err)
	}
	if cn != release.CipherSize(size) || hr.n != size {
		return release.Hash{}, 0, badRequest("a bundle entry is not as long as its header says")
	}
	sl.files = append(sl.files, release.SealedFile{Blob: ch, Size: cn})
	var h release.Hash
	hr.h.Sum(h[:0])
	return h, size, nil
}

// seal stores the index of an encrypted release as a blob and seals its
// key to the app; the result goes into the release's channel records.
func (s *Server) seal(id release.Hash, sl *sealer) (*sealedRecord, error) {
	if sl == nil {
		return nil, nil
	}
	sealed, err := release.SealKey(sl.app, id, sl.key)
	if err != nil {
		return nil, err
	}
	clear(sl.key) // from now on only the app can open it
	idx, err := json.Marshal(&release.SealedIndex{Type: release.TypeSealedIndex, Release: id, Key: sealed, Files: sl.files})
	if err != nil {
		return nil, err
	}
	ih, _, err := s.blobs.put(bytesReader(idx), int64(len(idx)), release.Hash{})
	if err != nil {
		return nil, err
	}
	return &sealedRecord{Index: ih}, nil
}

// sealRefs fills in the sealed index of the releases a channel record
// names (and clears it for plain releases).
func (s *Server) sealRefs(txn store.Txn, c *release.Channel) error {
	for _, ref := range []*release.Ref{&c.Release, c.Stable} {
		if ref == nil {
			continue
		}
		ref.Sealed = release.Hash{}
		if ref.ID.IsZero() {
			continue
		}
		var sr sealedRecord
		switch err := getJSON(txn, pfxSealed+ref.ID.String(), &sr); {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		default:
			ref.Sealed = sr.Index
		}
	}
	return nil
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func newSHA256() hash.Hash { return sha256.New() }

// checkPatchable refuses patches to an encrypted release: the origin keeps
// neither its plaintext nor its key, so it cannot build one, and must not
// try from plaintext blobs that other apps happen to share.
func (s *Server) checkPatchable(target release.Hash) error {
	err := s.db.View(func(txn store.Txn) error {
		var sr sealedRecord
		return getJSON(txn, pfxSealed+target.String(), &sr)
	})
	switch {
	case err == nil:
		return fmt.Errorf("release %s is encrypted and has no patches: %w", target, ErrNotFound)
	case errors.Is(err, ErrNotFound):
		return nil
	default:
		return err
	}
}
