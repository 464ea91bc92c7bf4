package origin

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// Bounds on API key requests.
const (
	maxKeyApps    = 64
	maxKeyNameLen = 128
	// maxKeys bounds how many keys GET /v1/keys lists (and so the stored
	// set an admin can usefully manage).
	maxKeys = 10_000
)

// newKeyID returns a random public key ID. It is independent of the
// secret, so listing IDs reveals nothing about any key.
func newKeyID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CreateKey stores a new API key and returns it with its secret, which is
// shown only this once.
func (s *Server) CreateKey(in wire.CreateKeyBody) (wire.APIKey, string, error) {
	if roleRank(in.Role) == 0 {
		return wire.APIKey{}, "", badRequest("role must be admin, publisher or reader")
	}
	if len(in.Name) > maxKeyNameLen {
		return wire.APIKey{}, "", badRequest("key name is over %d bytes", maxKeyNameLen)
	}
	if len(in.Apps) > maxKeyApps {
		return wire.APIKey{}, "", badRequest("a key may name at most %d apps", maxKeyApps)
	}
	for _, a := range in.Apps {
		if err := release.ValidateApp(a); err != nil {
			return wire.APIKey{}, "", badRequest("%v", err)
		}
	}
	if in.Role == wire.RolePublisher && len(in.Apps) == 0 {
		return wire.APIKey{}, "", badRequest("a publisher key must name its apps (--app): it uploads and moves channels only for them")
	}
	if in.Role == wire.RoleAdmin && len(in.Apps) > 0 {
		return wire.APIKey{}, "", badRequest("an admin key covers every app; leave out --app or use role publisher")
	}
	if !in.Expires.IsZero() && !in.Expires.After(s.cfg.Now()) {
		return wire.APIKey{}, "", badRequest("expiry %s is in the past", in.Expires.Format(time.RFC3339))
	}
	secret := newAPIKey()
	k, err := s.putKey(wire.APIKey{ID: newKeyID(), Name: in.Name, Role: in.Role, Apps: in.Apps, Expires: in.Expires}, secret)
	if err != nil {
		return wire.APIKey{}, "", err
	}
	s.log.Info("api key created", "key", k.ID, "role", k.Role, "apps", k.Apps)
	return k, secret, nil
}

// Keys lists the stored API keys (without their hashes), oldest first.
func (s *Server) Keys() ([]wire.APIKey, error) {
	var out []wire.APIKey
	err := s.db.View(func(txn store.Txn) error {
		return iterate(txn, pfxKey, func(_ string, b []byte) error {
			if len(out) >= maxKeys {
				return nil
			}
			var k wire.APIKey
			if err := json.Unmarshal(b, &k); err != nil {
				return err
			}
			k.Hash = ""
			out = append(out, k)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("origin: list api keys: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// RevokeKey deletes the API key with the given ID. A key cannot revoke
// itself, so an admin cannot lock the last admin out by accident.
func (s *Server) RevokeKey(id, caller string) error {
	if id == caller {
		return badRequest("a key cannot revoke itself; use another admin key")
	}
	found := false
	err := s.db.Update(func(txn store.Txn) error {
		var dbKey string
		var gone wire.APIKey
		err := iterate(txn, pfxKey, func(key string, b []byte) error {
			var k wire.APIKey
			if json.Unmarshal(b, &k) == nil && k.ID == id {
				dbKey, gone = key, k
			}
			return nil
		})
		if err != nil || dbKey == "" {
			return err
		}
		found = true
		// The tombstone keeps a revoked secret from coming back as
		// CAPSTAN_ADMIN_KEY at the next start (adminkey.go).
		if err := setJSON(txn, pfxRevoked+gone.Hash, revokedKey{ID: gone.ID, Role: gone.Role, Revoked: s.cfg.Now().UTC()}); err != nil {
			return err
		}
		return txn.Delete(dbKey)
	})
	if err != nil {
		return fmt.Errorf("origin: revoke api key: %w", err)
	}
	if !found {
		return fmt.Errorf("api key %q: %w (revoke by ID: capstan keys list shows them)", redactKeyID(id), ErrNotFound)
	}
	s.log.Info("api key revoked", "key", id, "by", caller)
	return nil
}

func (s *Server) handleListKeys(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authorize(r, wire.RoleAdmin, ""); err != nil {
		s.fail(w, err)
		return
	}
	keys, err := s.Keys()
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (s *Server) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	caller, err := s.authorize(r, wire.RoleAdmin, "")
	if err != nil {
		s.fail(w, err)
		return
	}
	id := r.PathValue("id")
	if len(id) > 64 {
		s.fail(w, badRequest("key id is over 64 bytes"))
		return
	}
	if err := s.RevokeKey(id, caller.ID); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": id})
}

// redactKeyID keeps what a key ID looks like (12 hex digits) and cuts
// anything longer, which may be a secret sent by mistake.
func redactKeyID(id string) string {
	if len(id) > 16 {
		return id[:4] + "…"
	}
	return id
}

// scopeAllows reports whether key k may act on app (used where a handler
// lists several apps and filters rather than refuses).
func scopeAllows(k *wire.APIKey, app string) bool {
	return k.Role == wire.RoleAdmin || len(k.Apps) == 0 || slices.Contains(k.Apps, app)
}
