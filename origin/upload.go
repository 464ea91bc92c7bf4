package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/capstan-ota/capstan/internal/bundle"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
)

// UploadRequest describes one release upload.
type UploadRequest struct {
	App       string
	Version   string
	MinNative string
	// Channel, if set, is pointed at the new release in the same
	// transaction that makes the release visible.
	Channel    string
	RolloutBPS int
	// NewChannel allows Channel to be a channel the app does not have yet
	// (an app's first channel needs no flag): a mistyped name is refused
	// instead of becoming a channel that ships (decision 104).
	NewChannel bool
	// Envelope is the CI-signed manifest, if the uploader signed one. Its
	// signed bytes must equal the manifest the origin computes from the zip.
	Envelope *release.Envelope
	// UploadKey, if set, is the uploader's idempotency key: a retry of an
	// upload that was committed gets the stored release, not a 409.
	UploadKey string
	// Capgo, if set, is a Capgo-encrypted copy of the bundle for devices
	// running @capgo/capacitor-updater (see capgo.go).
	Capgo *CapgoUpload
	// UploadedBy is the ID of the API key that uploads (kept with the
	// release for the console's history).
	UploadedBy string
}

// ErrBadRequest wraps every refusal caused by the request's content.
var ErrBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
}

// CheckUpload validates the parts of an upload that need no body, so that
// a doomed upload is refused before a byte of the bundle is sent.
func (s *Server) CheckUpload(req *UploadRequest) error {
	if err := release.ValidateApp(req.App); err != nil {
		return badRequest("%v", err)
	}
	if _, err := release.ParseVersion(req.Version); err != nil {
		return badRequest("%v", err)
	}
	if req.MinNative != "" {
		if _, err := release.ParseVersion(req.MinNative); err != nil {
			return badRequest("min native version: %v", err)
		}
	}
	if req.Channel != "" {
		if err := release.ValidateChannel(req.Channel); err != nil {
			return badRequest("%v", err)
		}
		if err := s.mayCreateChannel(req.App, req.Channel, req.NewChannel); err != nil {
			return err
		}
	}
	if req.RolloutBPS < 0 || req.RolloutBPS > release.FullRollout {
		return badRequest("rollout must be between 0 and 100 percent")
	}
	return s.checkNewVersion(req)
}

// Upload stores the zip read from body as a new release. The release is
// visible only once every blob is durable and its record is committed.
func (s *Server) Upload(ctx context.Context, req *UploadRequest, body io.Reader) (*release.Record, error) {
	if err := s.CheckUpload(req); err != nil {
		if rec := replayed(err); rec != nil {
			return rec, nil
		}
		return nil, err
	}
	if err := req.Capgo.check(); err != nil {
		return nil, err
	}
	if err := s.checkSignature(req.App, req.Envelope); err != nil {
		return nil, err
	}
	// Registered while it writes blobs and until its record is committed,
	// so garbage collection never deletes a blob this upload reuses.
	endWrite, err := s.beginWrite(ctx)
	if err != nil {
		return nil, err
	}
	defer endWrite()
	tmp, err := os.CreateTemp(s.blobs.tmp, "upload-*.zip")
	if err != nil {
		return nil, fmt.Errorf("origin: upload: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, io.LimitReader(body, s.cfg.MaxUploadBytes+1))
	if err != nil {
		return nil, fmt.Errorf("origin: upload: receive bundle: %w", err)
	}
	if n > s.cfg.MaxUploadBytes {
		return nil, badRequest("upload is over the limit of %d bytes", s.cfg.MaxUploadBytes)
	}
	entries, err := bundle.Read(tmp, n, s.cfg.Limits)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	sl, err := s.newSealer(req.App)
	if err != nil {
		return nil, err
	}
	// The manifest CI signed, recomputed from what is stored.
	m, err := bundle.Manifest(ctx, entries, req.App, req.Version, req.MinNative, func(e *bundle.Entry, r io.Reader) (release.Hash, int64, error) {
		return s.putFile(r, e.Size(), sl)
	})
	if errors.Is(err, bundle.ErrBadBundle) {
		return nil, badRequest("%v", err)
	}
	if err != nil {
		return nil, err
	}
	canonical, legacy, err := signedForms(m)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	// The file list a format 2 release names by hash is a blob like the
	// files: devices fetch it only to download file by file, edges to
	// answer Capgo devices.
	list := release.EncodeFileList(m.Files)
	if _, _, err := s.blobs.putNoSync(bytes.NewReader(list), int64(len(list)), release.Sum(list)); err != nil {
		return nil, err
	}
	// One syncfs for all the files, before the record that makes them part
	// of a release is committed.
	if err := s.blobs.sync(); err != nil {
		return nil, err
	}
	env := &release.Envelope{Signed: canonical}
	if req.Envelope != nil {
		if !bytes.Equal(req.Envelope.Signed, canonical) && !bytes.Equal(req.Envelope.Signed, legacy) {
			return nil, badRequest("the signed release does not match the uploaded bundle (was it signed for another zip, version or min native version?)")
		}
		env = req.Envelope
	}
	app, appErr := s.st.app(req.App)
	if appErr == nil && app.SigningRequired() && len(env.Signatures) == 0 {
		return nil, errUnsigned(app)
	}
	rec := &release.Record{
		ID: env.ID(), App: req.App, Version: req.Version, Uploaded: s.cfg.Now().UTC(), UploadedBy: req.UploadedBy,
		Size: m.TotalSize(), Files: len(m.Files), Envelope: env,
	}
	sealed, err := s.seal(rec.ID, sl)
	if err != nil {
		return nil, fmt.Errorf("origin: encrypt release: %w", err)
	}
	var published *release.Envelope
	s.chanMu.Lock()
	err = s.db.Update(func(txn store.Txn) error {
		if err := s.claimVersion(txn, req); err != nil {
			return err
		}
		if appErr != nil {
			if err := setJSON(txn, pfxApp+req.App, &App{ID: req.App, Created: rec.Uploaded}); err != nil {
				return err
			}
		}
		if err := setJSON(txn, releaseKey(req.App, req.Version), rec); err != nil {
			return err
		}
		if err := txn.Set(pfxReleaseID+rec.ID.String(), []byte(req.App+"/"+req.Version)); err != nil {
			return err
		}
		if err := putCapgoRelease(txn, rec.ID, req.Capgo); err != nil {
			return err
		}
		if sealed != nil {
			if err := setJSON(txn, pfxSealed+rec.ID.String(), sealed); err != nil {
				return err
			}
		}
		if req.Channel != "" {
			env, err := s.nextChannelRecord(txn, req.App, req.Channel, func(c *release.Channel, prev *release.Channel) error {
				pointAt(c, prev, release.Ref{Version: rec.Version, ID: rec.ID}, req.RolloutBPS)
				return nil
			})
			if err != nil {
				return err
			}
			published = env
		}
		return nil
	})
	s.chanMu.Unlock()
	if rec := replayed(err); rec != nil {
		return rec, nil
	}
	if err != nil {
		s.m.uploads.WithLabelValues("refused").Inc()
		return nil, fmt.Errorf("origin: commit release: %w", err)
	}
	s.m.uploads.WithLabelValues("ok").Inc()
	s.log.Info("release stored", "app", rec.App, "version", rec.Version, "id", rec.ID, "files", rec.Files, "bytes", rec.Size, "channel", req.Channel)
	if published != nil {
		s.publish(published)
	}
	if req.Capgo == nil && s.capgoUsed(req.App) {
		s.precomputeCapgo(rec.ID)
	}
	return rec, nil
}
