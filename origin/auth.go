package origin

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/wire"
)

// roleRank orders the roles (wire.Role), from most to least powerful.
func roleRank(r wire.Role) int {
	switch r {
	case wire.RoleAdmin:
		return 3
	case wire.RolePublisher:
		return 2
	case wire.RoleReader:
		return 1
	}
	return 0
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

func (s *Server) putKey(k wire.APIKey, secret string) (wire.APIKey, error) {
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
func (s *Server) authorize(r *http.Request, need wire.Role, app string) (*wire.APIKey, error) {
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
	var k wire.APIKey
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
	if roleRank(k.Role) < roleRank(need) {
		s.log.Warn("api refused: role", "key", k.ID, "role", k.Role, "need", need, "path", r.URL.Path)
		return nil, fmt.Errorf("%w: key %s has role %s, this needs %s", errForbidden, k.ID, k.Role, need)
	}
	if k.Role != wire.RoleAdmin && app != "" && len(k.Apps) > 0 && !slices.Contains(k.Apps, app) {
		s.log.Warn("api refused: app scope", "key", k.ID, "app", app, "path", r.URL.Path)
		return nil, fmt.Errorf("%w: key %s is not allowed for app %s", errForbidden, k.ID, app)
	}
	if roleRank(need) >= roleRank(wire.RolePublisher) {
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
	if _, err := s.authorize(r, wire.RoleReader, app); err != nil {
		s.fail(w, err)
		return "", false
	}
	if _, err := s.st.app(app); err != nil {
		s.fail(w, err)
		return "", false
	}
	return app, true
}
