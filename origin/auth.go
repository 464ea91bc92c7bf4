package origin

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"github.com/capstan-ota/capstan/origin/store"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Role is what an API key may do.
type Role string

// Roles, from most to least powerful.
const (
	RoleAdmin     Role = "admin"     // everything, every app
	RolePublisher Role = "publisher" // upload and channel changes for its apps
	RoleReader    Role = "reader"    // read releases, channels and stats of its apps
)

func (r Role) rank() int {
	switch r {
	case RoleAdmin:
		return 3
	case RolePublisher:
		return 2
	case RoleReader:
		return 1
	}
	return 0
}

// APIKey is a stored API key. Only the SHA-256 of the secret is kept.
type APIKey struct {
	ID      string    `json:"id"`
	Name    string    `json:"name,omitempty"`
	Role    Role      `json:"role"`
	Apps    []string  `json:"apps,omitempty"` // empty: every app (admin only)
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	Hash    string    `json:"hash"`
}

var (
	errUnauthenticated = errors.New("unauthenticated")
	errForbidden       = errors.New("forbidden")
	// errNoKey and errUnknownKey say which of the two a 401 is: a client
	// that sent its key must not be told to set it.
	errNoKey      = unauthenticated("no API key was sent: set CAPSTAN_API_KEY (or --api-key)")
	errUnknownKey = unauthenticated("this origin does not know the API key sent (mistyped, revoked, or made for another data folder); " +
		"an admin key lists the keys with capstan keys list, and a lost admin key is replaced by restarting the origin with a new CAPSTAN_ADMIN_KEY")
)

// unauthenticated is a 401 reason that reads as itself and matches
// errUnauthenticated.
type unauthenticated string

func (e unauthenticated) Error() string        { return string(e) }
func (e unauthenticated) Is(target error) bool { return target == errUnauthenticated }

func (s *Server) putKey(k APIKey, secret string) (APIKey, error) {
	k.Hash = hashKey(secret)
	if k.Created.IsZero() {
		k.Created = s.cfg.Now().UTC()
	}
	err := s.db.Update(func(txn store.Txn) error { return setJSON(txn, pfxKey+k.Hash, &k) })
	if err != nil {
		return k, fmt.Errorf("origin: store api key: %w", err)
	}
	return k, nil
}

// authorize checks the request's API key for role on app ("" for no app).
func (s *Server) authorize(r *http.Request, need Role, app string) (*APIKey, error) {
	secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if secret == "" {
		secret = r.Header.Get("X-Api-Key")
	}
	if secret == "" {
		return nil, errNoKey
	}
	if len(secret) > 256 {
		return nil, errUnknownKey
	}
	h := hashKey(secret)
	var k APIKey
	err := s.db.View(func(txn store.Txn) error { return getJSON(txn, pfxKey+h, &k) })
	if err != nil && !errors.Is(err, ErrNotFound) {
		// The store is away: say so (503), not "unknown key".
		return nil, fmt.Errorf("origin: check API key: %w", err)
	}
	if err != nil || subtle.ConstantTimeCompare([]byte(k.Hash), []byte(h)) != 1 {
		s.log.Warn("api refused: unknown key", "path", r.URL.Path, "remote", r.RemoteAddr)
		return nil, errUnknownKey
	}
	if !k.Expires.IsZero() && s.cfg.Now().After(k.Expires) {
		s.log.Warn("api refused: expired key", "key", k.ID, "path", r.URL.Path)
		return nil, fmt.Errorf("%w: API key %s expired at %s", errUnauthenticated, k.ID, k.Expires.Format(time.RFC3339))
	}
	if k.Role.rank() < need.rank() {
		s.log.Warn("api refused: role", "key", k.ID, "role", k.Role, "need", need, "path", r.URL.Path)
		return nil, fmt.Errorf("%w: key %s has role %s, this needs %s", errForbidden, k.ID, k.Role, need)
	}
	if k.Role != RoleAdmin && app != "" && len(k.Apps) > 0 && !slices.Contains(k.Apps, app) {
		s.log.Warn("api refused: app scope", "key", k.ID, "app", app, "path", r.URL.Path)
		return nil, fmt.Errorf("%w: key %s is not allowed for app %s", errForbidden, k.ID, app)
	}
	if need.rank() >= RolePublisher.rank() {
		// Audit trail: every change names the key that made it, in the
		// log and in the records all origins share.
		s.log.Info("api write", "key", k.ID, "role", k.Role, "method", r.Method, "path", r.URL.Path)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := s.audit(&k, r); err != nil {
				return nil, err
			}
		}
	}
	return &k, nil
}

// readableApp authorizes a reader (or better) for the request's {app} and
// checks that the app exists. On failure it has answered the request and
// ok is false.
func (s *Server) readableApp(w http.ResponseWriter, r *http.Request) (app string, ok bool) {
	app = r.PathValue("app")
	if _, err := s.authorize(r, RoleReader, app); err != nil {
		s.fail(w, err)
		return "", false
	}
	if _, err := s.st.app(app); err != nil {
		s.fail(w, err)
		return "", false
	}
	return app, true
}
