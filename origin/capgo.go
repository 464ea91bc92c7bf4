package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// Key layout of the Capgo settings in the origin's Badger database.
const (
	pfxCapgoApp     = "ga/" // ga/<app> → capgo.AppConfig
	pfxCapgoRelease = "gr/" // gr/<release id> → capgoRelease
	pfxCapgoUsed    = "gu/" // gu/<app> → present once Capgo devices or settings touched the app
)

// markCapgoUsed records that an app serves Capgo devices, so that its next
// uploads are prepared for them in the background. Apps no Capgo device
// ever asked about cost no zip and no Brotli build.
func (s *Server) markCapgoUsed(app string) {
	if s.capgoUsed(app) || release.ValidateApp(app) != nil {
		return
	}
	if _, err := s.st.app(app); err != nil {
		return
	}
	if err := s.db.Update(func(txn store.Txn) error { return txn.Set(pfxCapgoUsed+app, []byte{1}) }); err != nil {
		s.log.Warn("mark app as serving capgo devices", "app", app, "err", err)
	}
}

func (s *Server) capgoUsed(app string) bool {
	err := s.db.View(func(txn store.Txn) error {
		_, err := txn.Get(pfxCapgoUsed + app)
		return err
	})
	return err == nil
}

// CapgoUpload is the Capgo part of an upload: a bundle the CLI encrypted
// for the @capgo/capacitor-updater plugin. The origin stores the strings
// as they are and never sees the private key.
type CapgoUpload struct {
	Encrypted capgo.Encrypted
	// Zip is the blob of the encrypted zip, stored while the upload's
	// multipart body was read; ZipSize is its length.
	Zip     release.Hash
	ZipSize int64
	hasMeta bool
}

// capgoRelease is what the origin stores per encrypted release.
type capgoRelease struct {
	Encrypted     capgo.Encrypted `json:"encrypted"`
	EncryptedZip  release.Hash    `json:"encrypted_zip"`
	EncryptedSize int64           `json:"encrypted_size"`
}

// Multipart form names of the Capgo parts of an upload. They must come
// before the "bundle" part.
const (
	CapgoPartMeta = "capgo"     // JSON capgo.Encrypted
	CapgoPartZip  = "capgo_zip" // the encrypted zip
)

// readCapgoPart reads one Capgo part of a multipart upload into req.
func (s *Server) readCapgoPart(p *multipart.Part, req *UploadRequest) error {
	if req.Capgo == nil {
		req.Capgo = &CapgoUpload{}
	}
	switch p.FormName() {
	case CapgoPartMeta:
		b, err := io.ReadAll(io.LimitReader(p, 16<<10+1))
		if err != nil || len(b) > 16<<10 {
			return badRequest("capgo part is unreadable or over 16 KiB")
		}
		if err := json.Unmarshal(b, &req.Capgo.Encrypted); err != nil {
			return badRequest("capgo part: %v", err)
		}
		if err := req.Capgo.Encrypted.Validate(); err != nil {
			return badRequest("%v", err)
		}
		req.Capgo.hasMeta = true
	case CapgoPartZip:
		h, n, err := s.blobs.put(p, s.cfg.MaxUploadBytes, release.Hash{})
		if err != nil {
			return badRequest("capgo encrypted zip: %v", err)
		}
		if n == 0 || n%16 != 0 {
			return badRequest("capgo encrypted zip of %d bytes is not whole AES blocks", n)
		}
		req.Capgo.Zip, req.Capgo.ZipSize = h, n
	}
	return nil
}

// checkCapgo refuses a Capgo upload that lacks one of its two parts.
func (c *CapgoUpload) check() error {
	if c == nil {
		return nil
	}
	if !c.hasMeta || c.Zip.IsZero() {
		return badRequest("a Capgo-encrypted upload needs both the %q and the %q parts", CapgoPartMeta, CapgoPartZip)
	}
	return nil
}

// putCapgoRelease stores the Capgo part of an upload in the release's
// transaction, so that an encrypted release is never visible without it.
func putCapgoRelease(txn store.Txn, id release.Hash, c *CapgoUpload) error {
	if c == nil {
		return nil
	}
	return setJSON(txn, pfxCapgoRelease+id.String(), &capgoRelease{Encrypted: c.Encrypted, EncryptedZip: c.Zip, EncryptedSize: c.ZipSize})
}

// CapgoConfig returns an app's Capgo settings (the zero config when none
// were stored).
func (s *Server) CapgoConfig(app string) (*capgo.AppConfig, error) {
	var c capgo.AppConfig
	err := s.db.View(func(txn store.Txn) error { return getJSON(txn, pfxCapgoApp+app, &c) })
	if err != nil && err != ErrNotFound {
		return nil, fmt.Errorf("origin: capgo config of %s: %w", app, err)
	}
	return &c, nil
}

// SetCapgoConfig replaces an app's Capgo settings. Edges pick them up
// within their refresh interval (edge.Config.CapgoConfigTTL).
func (s *Server) SetCapgoConfig(app string, c *capgo.AppConfig) error {
	if err := release.ValidateApp(app); err != nil {
		return badRequest("%v", err)
	}
	if err := c.Validate(); err != nil {
		return badRequest("%v", err)
	}
	if _, err := s.st.app(app); err != nil {
		return err
	}
	if err := s.db.Update(func(txn store.Txn) error { return setJSON(txn, pfxCapgoApp+app, c) }); err != nil {
		return fmt.Errorf("origin: store capgo config: %w", err)
	}
	s.markCapgoUsed(app)
	return nil
}

// CapgoRelease returns what edges need to answer Capgo devices for a
// release, building its full zip first if needed.
func (s *Server) CapgoRelease(ctx context.Context, id release.Hash) (*capgo.ReleaseMeta, error) {
	if _, err := s.st.releaseByID(id); err != nil {
		return nil, err
	}
	var cr capgoRelease
	err := s.db.View(func(txn store.Txn) error { return getJSON(txn, pfxCapgoRelease+id.String(), &cr) })
	switch {
	case err == nil:
		// Encrypted releases are served as the encrypted zip only.
		return &capgo.ReleaseMeta{Encrypted: &cr.Encrypted, EncryptedZip: cr.EncryptedZip, EncryptedSize: cr.EncryptedSize}, nil
	case err != ErrNotFound:
		return nil, fmt.Errorf("origin: capgo release %s: %w", id, err)
	}
	// A release encrypted for Capstan devices (issue 6) is stored as
	// ciphertext only: there is no plaintext to zip for Capgo devices.
	if err := s.checkPatchable(id); err != nil {
		return nil, fmt.Errorf("origin: no Capgo download for %s (upload it with --capgo-key to serve Capgo devices): %w", id, err)
	}
	h, err := s.capgoZip(ctx, id)
	if err != nil {
		return nil, err
	}
	size, err := s.blobs.b.Size(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("origin: zip of %s: %w", id, err)
	}
	return &capgo.ReleaseMeta{Zip: h, ZipSize: size}, nil
}

// capgoRoutes registers the Capgo endpoints: public, read-only documents
// and derived blobs for edges, and the operator's settings API.
func (s *Server) capgoRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/capgo/apps/{app}", s.handleCapgoPublicConfig)
	mux.HandleFunc("GET /v1/capgo/releases/{id}", s.handleCapgoRelease)
	mux.HandleFunc("GET /v1/capgo/zips/{id}", s.handleCapgoZip)
	mux.HandleFunc("GET /v1/capgo/br/{hash}", s.handleCapgoBrotli)
	mux.HandleFunc("GET /v1/apps/{app}/capgo", s.handleGetCapgoConfig)
	mux.HandleFunc("PUT /v1/apps/{app}/capgo", s.handlePutCapgoConfig)
}

// handleCapgoPublicConfig serves an app's Capgo settings to edges. They
// say only which devices a channel accepts, nothing secret, like the
// channel records in /v1/state.
func (s *Server) handleCapgoPublicConfig(w http.ResponseWriter, r *http.Request) {
	// Edges ask for an app's settings when a Capgo device first checks.
	s.markCapgoUsed(r.PathValue("app"))
	c, err := s.CapgoConfig(r.PathValue("app"))
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) handleCapgoRelease(w http.ResponseWriter, r *http.Request) {
	id, err := release.ParseHash(r.PathValue("id"))
	if err != nil {
		s.fail(w, badRequest("release id: %v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	meta, err := s.CapgoRelease(ctx, id)
	if err != nil {
		s.fail(w, err)
		return
	}
	immutable(w, "capgo-"+id.String())
	writeJSON(w, http.StatusOK, meta)
}

func (s *Server) handleGetCapgoConfig(w http.ResponseWriter, r *http.Request) {
	app, ok := s.readableApp(w, r)
	if !ok {
		return
	}
	c, err := s.CapgoConfig(app)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) handlePutCapgoConfig(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	if _, err := s.authorize(r, wire.RolePublisher, app); err != nil {
		s.fail(w, err)
		return
	}
	var c capgo.AppConfig
	if err := decodeBody(r, &c); err != nil {
		s.fail(w, err)
		return
	}
	if err := s.SetCapgoConfig(app, &c); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, &c)
}
