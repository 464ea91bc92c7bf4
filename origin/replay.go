package origin

import (
	"errors"
	"fmt"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
)

// An upload may carry an idempotency key (the Idempotency-Key header; the
// CLI sends one per `capstan upload`, the same on every retry). A retry of
// an upload that was committed although its answer was lost (an origin
// killed after the commit, a database connection dropped during it) then
// gets the stored release instead of a 409, while another upload of the
// same version still gets the 409:
//
//	u/<app>/<version> → the key of the upload that created the version
const pfxUploadKey = "u/"

// maxUploadKey bounds the Idempotency-Key header.
const maxUploadKey = 128

// replayedError says the upload was already committed under its
// idempotency key; Record is the stored release.
type replayedError struct{ Record *release.Record }

func (e *replayedError) Error() string {
	return fmt.Sprintf("release %s %s was already stored by this upload", e.Record.App, e.Record.Version)
}

// replayed returns the stored release when err says the upload is a retry
// of one already committed.
func replayed(err error) *release.Record {
	var re *replayedError
	if errors.As(err, &re) {
		return re.Record
	}
	return nil
}

// checkNewVersion refuses a version that exists, unless this very upload
// (same idempotency key) created it.
func (s *Server) checkNewVersion(req *UploadRequest) error {
	var rec *release.Record
	err := s.db.View(func(txn store.Txn) error {
		rec = nil
		var r release.Record
		if err := getJSON(txn, releaseKey(req.App, req.Version), &r); err != nil {
			return err
		}
		rec = &r
		return s.sameUpload(txn, req, rec)
	})
	switch {
	case rec == nil && errors.Is(err, ErrNotFound):
		return nil
	case rec == nil:
		return fmt.Errorf("origin: upload: %w", err)
	}
	return err
}

// claimVersion, inside the release's transaction, refuses a version that
// exists (the database decides between origins racing for it) and records
// the upload's idempotency key.
func (s *Server) claimVersion(txn store.Txn, req *UploadRequest) error {
	var r release.Record
	switch err := getJSON(txn, releaseKey(req.App, req.Version), &r); {
	case err == nil:
		return s.sameUpload(txn, req, &r)
	case !errors.Is(err, ErrNotFound):
		return err
	}
	if req.UploadKey == "" {
		return nil
	}
	return txn.Set(pfxUploadKey+req.App+"/"+req.Version, []byte(req.UploadKey))
}

// sameUpload returns a replayedError if rec was created by req's upload
// key, else the conflict.
func (s *Server) sameUpload(txn store.Txn, req *UploadRequest, rec *release.Record) error {
	if req.UploadKey != "" {
		k, err := txn.Get(pfxUploadKey + req.App + "/" + req.Version)
		if err == nil && string(k) == req.UploadKey {
			return &replayedError{Record: rec}
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return fmt.Errorf("%w: version %s of %s; versions are never reused, bump the version", ErrConflict, req.Version, req.App)
}
