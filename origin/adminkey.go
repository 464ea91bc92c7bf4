package origin

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/wire"
)

// pfxRevoked remembers the hash of every revoked API key, so that a revoked
// secret left in an origin's environment (CAPSTAN_ADMIN_KEY) cannot come
// back as an admin key at the next start.
const pfxRevoked = "kr/" // kr/<sha256 of api key> → revokedKey

// revokedKey is the tombstone of a revoked API key.
type revokedKey struct {
	ID      string    `json:"id"`
	Role    wire.Role `json:"role"`
	Revoked time.Time `json:"revoked"`
}

// AdminKeyStart says what an origin's start did about admin keys: see
// docs/decisions/100-admin-key-on-an-existing-data-folder.md.
type AdminKeyStart struct {
	// Generated is the secret of an admin key made because the data folder
	// had no API key and Config.AdminKey was empty; it is shown only once.
	Generated string
	// ID is the ID of the admin key Config.AdminKey names (or of the
	// generated one); empty when no admin key was given or generated.
	ID string
	// Added is true when Config.AdminKey was new to the data folder and
	// was stored as an admin key at this start.
	Added bool
	// Others counts the other admin keys of the data folder, which stay
	// valid until revoked.
	Others int
}

// AdminKeyStart returns what this start did about admin keys.
func (s *Server) AdminKeyStart() AdminKeyStart { return s.adminStart }

// GeneratedAdminKey returns the admin key generated at first start, or ""
// when none was generated (it existed, or came from Config.AdminKey).
func (s *Server) GeneratedAdminKey() string { return s.adminStart.Generated }

// bootstrapAdmin makes sure the data folder has an admin key. An empty
// folder gets Config.AdminKey, or a generated key. A folder that has keys
// gets Config.AdminKey added as one more admin key when it does not know
// it yet: whoever sets the origin's environment owns its data folder
// anyway, and this way every start with a given CAPSTAN_ADMIN_KEY ends
// with that key working (decision 100). A revoked key is refused.
func (s *Server) bootstrapAdmin() error {
	secret := s.cfg.AdminKey
	var keys []wire.APIKey
	err := s.db.View(func(txn store.Txn) error {
		return iterate(txn, pfxKey, func(_ string, b []byte) error {
			var k wire.APIKey
			if err := json.Unmarshal(b, &k); err != nil {
				return err
			}
			keys = append(keys, k)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("origin: read api keys: %w", err)
	}
	admins := 0
	for _, k := range keys {
		if k.Role == wire.RoleAdmin {
			admins++
		}
	}
	if secret == "" {
		if len(keys) > 0 {
			return nil
		}
		secret = newAPIKey()
		s.adminStart.Generated = secret
	}
	h := hashKey(secret)
	for _, k := range keys {
		if k.Hash != h {
			continue
		}
		switch {
		case k.Role != wire.RoleAdmin:
			return fmt.Errorf("origin: CAPSTAN_ADMIN_KEY is the secret of %s key %s in %s, not of an admin key: give the origin an admin secret of its own (openssl rand -hex 32)", k.Role, k.ID, s.cfg.DataDir)
		case !k.Expires.IsZero() && s.cfg.Now().After(k.Expires):
			return fmt.Errorf("origin: CAPSTAN_ADMIN_KEY is admin key %s of %s, which expired at %s: start with a new secret (openssl rand -hex 32); it is added as an admin key", k.ID, s.cfg.DataDir, k.Expires.Format(time.RFC3339))
		}
		s.adminStart.ID, s.adminStart.Others = k.ID, admins-1
		return nil
	}
	var gone revokedKey
	err = s.db.View(func(txn store.Txn) error { return getJSON(txn, pfxRevoked+h, &gone) })
	switch {
	case err == nil:
		return fmt.Errorf("origin: CAPSTAN_ADMIN_KEY is API key %s, revoked at %s in %s: remove it from the origin's environment, or start with a new secret (openssl rand -hex 32)", gone.ID, gone.Revoked.Format(time.RFC3339), s.cfg.DataDir)
	case !errors.Is(err, ErrNotFound):
		return fmt.Errorf("origin: read revoked keys: %w", err)
	}
	k := wire.APIKey{ID: newKeyID(), Name: "CAPSTAN_ADMIN_KEY", Role: wire.RoleAdmin}
	if len(keys) == 0 {
		// The first key keeps the ID it always had, "admin".
		k.ID, k.Name = "admin", "bootstrap admin"
	}
	if _, err := s.putKey(k, secret); err != nil {
		return err
	}
	s.adminStart.ID, s.adminStart.Added, s.adminStart.Others = k.ID, len(keys) > 0, admins
	if len(keys) > 0 {
		s.log.Warn("CAPSTAN_ADMIN_KEY added as a new admin key; the data folder's other admin keys stay valid until revoked", "key", k.ID, "other_admin_keys", admins, "data", s.cfg.DataDir)
	}
	return nil
}
