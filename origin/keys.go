package origin

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// pfxRotation holds every key rotation statement, in order:
// x/<20-digit sequence> → signed rotation envelope.
const pfxRotation = "x/"

// signingKey returns the origin's current channel-signing key.
func (s *Server) signingKey() ed25519.PrivateKey {
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	return s.key
}

func (s *Server) keyPath() string { return filepath.Join(s.cfg.DataDir, "origin.key") }

// Rotations returns the stored rotation statements, oldest first, at most
// release.MaxRotations (the newest ones).
func (s *Server) Rotations() ([]*release.Envelope, error) {
	var out []*release.Envelope
	err := s.db.View(func(txn store.Txn) error {
		return iterate(txn, pfxRotation, func(_ string, b []byte) error {
			var env release.Envelope
			if err := json.Unmarshal(b, &env); err != nil {
				return err
			}
			out = append(out, &env)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("origin: rotations: %w", err)
	}
	if len(out) > release.MaxRotations {
		out = out[len(out)-release.MaxRotations:]
	}
	return out, nil
}

func (s *Server) storeRotation(txn store.Txn, env *release.Envelope) error {
	n := 0
	if err := iterate(txn, pfxRotation, func(string, []byte) error { n++; return nil }); err != nil {
		return err
	}
	return setJSON(txn, fmt.Sprintf("%s%020d", pfxRotation, n), env)
}

// RotateKey replaces the origin's channel-signing key with a new one. It
// publishes a statement signed by the old key (and by coSigners, e.g. the
// release key, which lets devices follow even when the old key is known to
// be stolen), then re-signs every channel record with the new key.
//
// The new key is written first and the old one kept as origin.key.old
// until the statement is stored, so a crash in between is finished on the
// next start (finishRotation) and devices are never left without a path
// from the key they trust to the key that signs.
func (s *Server) RotateKey(ctx context.Context, coSigners ...ed25519.PrivateKey) (*release.Envelope, error) {
	if s.cfg.SigningKey != nil {
		// The key lives with the operator, shared by every origin of the
		// store: one origin cannot swap it for the others.
		return nil, badRequest("this origin signs with the key it was given (--origin-key), which every origin sharing its store holds: rotate it by restarting every origin with --origin-key NEW --previous-origin-key OLD (capstan keys gen --origin --out NEW)")
	}
	s.chanMu.Lock()
	old := s.signingKey()
	next, err := release.GenerateKey()
	if err != nil {
		s.chanMu.Unlock()
		return nil, err
	}
	env, err := release.NewRotation(release.RoleOrigin, "", old, next.Public().(ed25519.PublicKey), s.cfg.Now(), coSigners...)
	if err != nil {
		s.chanMu.Unlock()
		return nil, err
	}
	oldPEM, err := release.EncodePrivateKey(old)
	if err == nil {
		err = writeFileAtomic(s.keyPath()+".old", oldPEM, 0o600)
	}
	if err == nil {
		err = writeKeyFiles(s.keyPath(), next)
	}
	if err == nil {
		err = s.db.Update(func(txn store.Txn) error { return s.storeRotation(txn, env) })
	}
	if err != nil {
		s.chanMu.Unlock()
		return nil, fmt.Errorf("origin: rotate key: %w", err)
	}
	os.Remove(s.keyPath() + ".old")
	s.keyMu.Lock()
	s.key = next
	s.keyMu.Unlock()
	s.chanMu.Unlock()
	s.log.Warn("origin key rotated", "old", release.KeyID(old.Public().(ed25519.PublicKey)), "new", release.KeyID(next.Public().(ed25519.PublicKey)), "cosigned", len(coSigners))
	return env, s.resignAll(ctx)
}

// resignAll signs every channel record again with the current key.
func (s *Server) resignAll(ctx context.Context) error {
	envs, err := s.st.channels("")
	if err != nil {
		return err
	}
	var errs []error
	for _, env := range envs {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := env.Channel()
		if err != nil {
			continue
		}
		if _, err := s.updateChannel(c.App, c.Channel, func(*release.Channel, *release.Channel) error { return nil }); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// finishRotation completes a rotation a crash interrupted: origin.key is
// already the new key, origin.key.old still exists, and no statement for
// the new key was stored.
func (s *Server) finishRotation() error {
	b, err := os.ReadFile(s.keyPath() + ".old")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("origin: finish key rotation: %w", err)
	}
	old, err := release.ParsePrivateKey(b)
	if err != nil {
		return fmt.Errorf("origin: finish key rotation: %w", err)
	}
	cur := s.signingKey()
	rots, err := s.Rotations()
	if err != nil {
		return err
	}
	done := slices.ContainsFunc(rots, func(e *release.Envelope) bool {
		r, err := e.Rotation()
		return err == nil && r.Role == release.RoleOrigin && r.New.Equal(cur.Public().(ed25519.PublicKey))
	})
	if !done && !old.Equal(cur) {
		env, err := release.NewRotation(release.RoleOrigin, "", old, cur.Public().(ed25519.PublicKey), s.cfg.Now())
		if err != nil {
			return err
		}
		if err := s.db.Update(func(txn store.Txn) error { return s.storeRotation(txn, env) }); err != nil {
			return fmt.Errorf("origin: finish key rotation: %w", err)
		}
		s.log.Warn("finished an interrupted origin key rotation", "new", release.KeyID(cur.Public().(ed25519.PublicKey)))
	}
	return os.Remove(s.keyPath() + ".old")
}

func writeKeyFiles(path string, k ed25519.PrivateKey) error {
	priv, err := release.EncodePrivateKey(k)
	if err != nil {
		return err
	}
	pub, err := release.EncodePublicKey(k.Public().(ed25519.PublicKey), release.RoleOrigin)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, priv, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(path+".pub", pub, 0o644)
}

// AddReleaseRotation accepts a release key rotation statement for app: it
// must be signed by a release key registered for the app. The app then
// accepts the new key instead of the old one, and the statement is served
// to edges and devices.
func (s *Server) AddReleaseRotation(env *release.Envelope) (*release.Rotation, error) {
	r, err := env.Rotation()
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if r.Role != release.RoleRelease {
		return nil, badRequest("only release key rotations are accepted here; the origin rotates its own key (capstan origin --rotate-key)")
	}
	if r.App == "" {
		return nil, badRequest("the rotation statement names no app (capstan keys rotate --app)")
	}
	err = s.db.Update(func(txn store.Txn) error {
		var a App
		if err := getJSON(txn, pfxApp+r.App, &a); err != nil {
			return fmt.Errorf("app %q: %w", r.App, err)
		}
		if len(a.ReleaseKeys) == 0 {
			return badRequest("app %s has no registered release keys to rotate from (capstan app set --release-key)", r.App)
		}
		var trusted []release.PublicKey
		for _, k := range a.ReleaseKeys {
			trusted = append(trusted, release.PublicKey{Key: k, Role: release.RoleRelease})
		}
		next, _, applied, err := release.ApplyRotation(trusted, env)
		if err != nil {
			return fmt.Errorf("%w: %v", errForbidden, err)
		}
		if !applied {
			return fmt.Errorf("%w: the rotation to %s is already in effect", ErrConflict, release.KeyID(r.New))
		}
		a.ReleaseKeys = release.KeysFor(next, release.RoleRelease)
		if err := setJSON(txn, pfxApp+r.App, &a); err != nil {
			return err
		}
		return s.storeRotation(txn, env)
	})
	if err != nil {
		return nil, fmt.Errorf("origin: release key rotation: %w", err)
	}
	s.log.Warn("release key rotated", "app", r.App, "old", r.Old, "new", release.KeyID(r.New))
	return r, nil
}

func (s *Server) handleRotations(w http.ResponseWriter, r *http.Request) {
	rots, err := s.Rotations()
	if err != nil {
		s.fail(w, err)
		return
	}
	if rots == nil {
		rots = []*release.Envelope{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rotations": rots})
}

func (s *Server) handleAddRotation(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, release.MaxRotationBytes+1))
	if err != nil || len(b) > release.MaxRotationBytes {
		s.fail(w, badRequest("rotation statement is unreadable or over %d bytes", release.MaxRotationBytes))
		return
	}
	env, err := release.DecodeEnvelope(b)
	if err != nil {
		s.fail(w, badRequest("%v", err))
		return
	}
	rot, err := env.Rotation()
	if err != nil {
		s.fail(w, badRequest("%v", err))
		return
	}
	if _, err := s.authorize(r, wire.RolePublisher, rot.App); err != nil {
		s.fail(w, err)
		return
	}
	if rot.App == "" {
		s.fail(w, badRequest("the rotation statement names no app (capstan keys rotate --app)"))
		return
	}
	if _, err := s.AddReleaseRotation(env); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, env)
}

func (s *Server) handleRotateOriginKey(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authorize(r, wire.RoleAdmin, ""); err != nil {
		s.fail(w, err)
		return
	}
	env, err := s.RotateKey(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, env)
}

// adoptRotation, on an origin given its key (Config.SigningKey) and the
// key it replaces (Config.PreviousSigningKey), makes sure the store holds
// the statement from the previous key to this one, then re-signs every
// channel record the previous key signed. Every origin of a shared store
// restarted with the two keys does the same; the statement is written once
// (checked in its transaction) and a record already re-signed is skipped.
func (s *Server) adoptRotation(ctx context.Context, prev ed25519.PrivateKey) error {
	cur := s.signingKey()
	curPub := cur.Public().(ed25519.PublicKey)
	if prev.Equal(cur) {
		return errors.New("origin: the previous origin key is the current one")
	}
	env, err := release.NewRotation(release.RoleOrigin, "", prev, curPub, s.cfg.Now())
	if err != nil {
		return err
	}
	stored := false
	err = s.db.Update(func(txn store.Txn) error {
		stored = false
		done := false
		err := iterate(txn, pfxRotation, func(_ string, b []byte) error {
			var e release.Envelope
			if json.Unmarshal(b, &e) == nil {
				if r, err := e.Rotation(); err == nil && r.Role == release.RoleOrigin && r.New.Equal(curPub) {
					done = true
				}
			}
			return nil
		})
		if err != nil || done {
			return err
		}
		stored = true
		return s.storeRotation(txn, env)
	})
	if err != nil {
		return fmt.Errorf("origin: adopt key rotation: %w", err)
	}
	if stored {
		s.log.Warn("origin key rotated", "old", release.KeyID(prev.Public().(ed25519.PublicKey)), "new", release.KeyID(curPub))
	}
	envs, err := s.st.channels("")
	if err != nil {
		return err
	}
	oldID := release.KeyID(prev.Public().(ed25519.PublicKey))
	var errs []error
	for _, e := range envs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(e.Signatures) == 0 || e.Signatures[0].KeyID != oldID {
			continue
		}
		c, err := e.Channel()
		if err != nil {
			continue
		}
		if _, err := s.updateChannel(c.App, c.Channel, func(*release.Channel, *release.Channel) error { return nil }); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
