package origin

import (
	"fmt"
	"io"

	"github.com/capstan-ota/capstan/release"
)

// manifestOf returns the full manifest of a stored release. A format 2
// release signs only a document naming its file list by hash (decision
// 012); the list itself is a blob the upload stored beside the files, read
// back and checked here. A format 1 release carries its list in the signed
// manifest.
func (s *Server) manifestOf(rec *release.Record) (*release.Manifest, error) {
	doc, m, err := rec.Envelope.Release()
	if err != nil {
		return nil, fmt.Errorf("origin: stored release %s: %w", rec.ID, err)
	}
	if m != nil {
		return m, nil
	}
	f, err := s.blobs.open(doc.Files.SHA256)
	if err != nil {
		return nil, fmt.Errorf("origin: file list of release %s: %w", rec.ID, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, doc.Files.MaxListBytes()))
	if err != nil {
		return nil, fmt.Errorf("origin: file list of release %s: %w", rec.ID, err)
	}
	files, err := release.DecodeFileList(b)
	if err != nil {
		return nil, fmt.Errorf("origin: file list of release %s: %w", rec.ID, err)
	}
	return doc.WithFiles(files)
}

// ReleaseManifest returns the full manifest (every file) of a stored
// release by ID.
func (s *Server) ReleaseManifest(id release.Hash) (*release.Manifest, error) {
	rec, err := s.st.releaseByID(id)
	if err != nil {
		return nil, err
	}
	return s.manifestOf(rec)
}

// signedForms returns the two encodings a CI key may have signed for a
// bundle: the release document (format 2, what `capstan upload` signs) and
// the full manifest (format 1, what older CLIs signed).
func signedForms(m *release.Manifest) (doc, manifest []byte, err error) {
	if doc, err = m.EncodeDoc(); err != nil {
		return nil, nil, err
	}
	if manifest, err = m.Encode(); err != nil {
		return nil, nil, err
	}
	return doc, manifest, nil
}
