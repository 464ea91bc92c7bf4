package origin

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// Bounds on an app's trust settings: a handful of release keys is enough
// for an overlap during rotation, and a short list keeps a hostile admin
// request from growing a record without limit.
const maxReleaseKeys = 8

func viewApp(a *App) wire.AppView {
	v := wire.AppView{ID: a.ID, Created: a.Created, RequireSigning: a.RequireSigning, AllowUnsigned: a.AllowUnsigned,
		EncryptKey: a.EncryptKey, Encrypted: len(a.EncryptKey) > 0, SigningRequired: a.SigningRequired()}
	for _, k := range a.ReleaseKeys {
		v.ReleaseKeyIDs = append(v.ReleaseKeyIDs, release.KeyID(k))
		if p, err := release.EncodePublicKey(k, release.RoleRelease); err == nil {
			v.ReleaseKeyPEM = append(v.ReleaseKeyPEM, string(p))
		}
	}
	return v
}

// SetApp changes an app's trust settings, creating the app if it does not
// exist yet (so that signing can be required before the first upload).
func (s *Server) SetApp(id string, in wire.AppSettings) (*App, error) {
	if err := release.ValidateApp(id); err != nil {
		return nil, badRequest("%v", err)
	}
	if len(in.AddReleaseKeys) > maxReleaseKeys || len(in.RemoveReleaseKeys) > maxReleaseKeys {
		return nil, badRequest("at most %d release keys per request", maxReleaseKeys)
	}
	var add []ed25519.PublicKey
	for _, p := range in.AddReleaseKeys {
		keys, err := release.ParsePublicKeys([]byte(p))
		if err != nil {
			return nil, badRequest("release key: %v", err)
		}
		for _, k := range keys {
			if k.Role != "" && k.Role != release.RoleRelease {
				return nil, badRequest("key %s has role %s, not %s", release.KeyID(k.Key), k.Role, release.RoleRelease)
			}
			add = append(add, k.Key)
		}
	}
	var encKey []byte
	if in.EncryptKey != nil && *in.EncryptKey != "" {
		k, err := release.ParseBoxPublicKey([]byte(*in.EncryptKey))
		if err != nil {
			return nil, badRequest("encrypt key: %v", err)
		}
		encKey = k.Bytes()
	}
	var out App
	err := s.db.Update(func(txn store.Txn) error {
		out = App{} // the transaction may run more than once
		switch err := getJSON(txn, pfxApp+id, &out); {
		case errors.Is(err, ErrNotFound):
			out = App{ID: id, Created: s.cfg.Now().UTC()}
		case err != nil:
			return err
		}
		out.ReleaseKeys = slices.DeleteFunc(out.ReleaseKeys, func(k ed25519.PublicKey) bool {
			return slices.Contains(in.RemoveReleaseKeys, release.KeyID(k))
		})
		for _, k := range add {
			if !slices.ContainsFunc(out.ReleaseKeys, func(o ed25519.PublicKey) bool { return o.Equal(k) }) {
				out.ReleaseKeys = append(out.ReleaseKeys, k)
			}
		}
		if len(out.ReleaseKeys) > maxReleaseKeys {
			return badRequest("app %s would have %d release keys, the limit is %d: remove old ones", id, len(out.ReleaseKeys), maxReleaseKeys)
		}
		if in.RequireSigning != nil {
			out.RequireSigning = *in.RequireSigning
			out.AllowUnsigned = !*in.RequireSigning
		} else if len(add) > 0 {
			// A newly registered key is trusted by the app's devices:
			// unsigned uploads would fail on all of them.
			out.AllowUnsigned = false
		}
		if out.RequireSigning && len(out.ReleaseKeys) == 0 {
			return badRequest("app %s: requiring signatures needs at least one release key (--release-key FILE.pub)", id)
		}
		if in.EncryptKey != nil {
			out.EncryptKey = encKey
		}
		return setJSON(txn, pfxApp+id, &out)
	})
	if err != nil {
		return nil, fmt.Errorf("origin: app %s: %w", id, err)
	}
	s.log.Info("app trust settings changed", "app", id, "release_keys", len(out.ReleaseKeys), "signing_required", out.SigningRequired(), "encrypted", len(out.EncryptKey) > 0)
	return &out, nil
}

// checkSignature enforces an app's signing policy on an upload before a
// byte of its bundle is stored: when signing is required (asked for, or
// release keys registered), a registered release key must have signed;
// whenever the upload is signed and keys are registered, the signature
// must verify against them (a manifest signed by an unknown or wrong key
// is refused rather than silently stored).
func (s *Server) checkSignature(app string, env *release.Envelope) error {
	a, err := s.st.app(app)
	if errors.Is(err, ErrNotFound) {
		return nil // a new app has no policy yet
	}
	if err != nil {
		return err
	}
	signed := env != nil && len(env.Signatures) > 0
	if !signed {
		if a.SigningRequired() {
			s.log.Warn("upload refused: unsigned", "app", app)
			return errUnsigned(a)
		}
		return nil
	}
	if len(a.ReleaseKeys) == 0 {
		return nil
	}
	if err := env.Verify(a.ReleaseKeys); err != nil {
		s.log.Warn("upload refused: signature", "app", app, "err", err)
		ids := make([]string, 0, len(env.Signatures))
		for _, sg := range env.Signatures {
			ids = append(ids, sg.KeyID)
		}
		return fmt.Errorf("%w: app %s: the manifest signature (keys %v) does not verify against the app's release keys: %v", errForbidden, app, ids, err)
	}
	return nil
}

// errUnsigned is the refusal of an unsigned upload to an app that
// requires signatures: which keys, and the two ways forward.
func errUnsigned(a *App) error {
	ids := make([]string, 0, len(a.ReleaseKeys))
	for _, k := range a.ReleaseKeys {
		ids = append(ids, release.KeyID(k))
	}
	return fmt.Errorf("%w: app %s has release keys [%s], and its devices install only releases one of them signed: "+
		"upload with --sign-key (or CAPSTAN_SIGNING_KEY); to ship unsigned releases anyway, an admin runs capstan app set --app %s --no-require-signing",
		errForbidden, a.ID, strings.Join(ids, ", "), a.ID)
}

func (s *Server) handleGetApp(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	if _, err := s.authorize(r, wire.RoleReader, app); err != nil {
		s.fail(w, err)
		return
	}
	a, err := s.st.app(app)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, viewApp(a))
}

// handleSetApp changes trust settings. It needs an admin key: a publisher
// key sits in CI next to the release key, and whoever steals both must not
// be able to swap the release keys the origin checks.
func (s *Server) handleSetApp(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	if _, err := s.authorize(r, wire.RoleAdmin, app); err != nil {
		s.fail(w, err)
		return
	}
	var body wire.AppSettings
	if err := decodeBody(r, &body); err != nil {
		s.fail(w, err)
		return
	}
	a, err := s.SetApp(app, body)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, viewApp(a))
}

// trustRoutes adds the trust endpoints: app settings, API key management,
// key rotation statements.
func (s *Server) trustRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/apps/{app}", s.handleGetApp)
	mux.HandleFunc("PUT /v1/apps/{app}", s.handleSetApp)
	mux.HandleFunc("GET /v1/keys", s.handleListKeys)
	mux.HandleFunc("DELETE /v1/keys/{id}", s.handleRevokeKey)
	mux.HandleFunc("GET /v1/keys/rotations", s.handleRotations)
	mux.HandleFunc("POST /v1/keys/rotations", s.handleAddRotation)
	mux.HandleFunc("POST /v1/keys/origin/rotate", s.handleRotateOriginKey)
	mux.HandleFunc("GET /v1/audit", s.handleAudit)
}
