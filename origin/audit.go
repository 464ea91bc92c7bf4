package origin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/wire"
)

// pfxAudit keeps who changed what, in the records every origin of a store
// shares, so the trail is one list however many origins took the calls:
//
//	w/<unix ns, 20 digits>/<node>/<n, 12 digits> → AuditEntry
const pfxAudit = "w/"

// Bounds on GET /v1/audit.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

// AuditEntry is one authorized write: which key made which call, on which
// origin.
type AuditEntry struct {
	At     string    `json:"at"`
	Key    string    `json:"key"`
	Role   wire.Role `json:"role"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Origin string    `json:"origin"`
}

// audit records an authorized write before it runs. A write that cannot be
// recorded is refused: the trail must not miss a change.
func (s *Server) audit(k *wire.APIKey, r *http.Request) error {
	now := s.cfg.Now().UTC()
	e := AuditEntry{At: now.Format("2006-01-02T15:04:05.000000000Z07:00"), Key: k.ID, Role: k.Role, Method: r.Method, Path: r.URL.Path, Origin: s.node}
	key := fmt.Sprintf("%s%020d/%s/%012d", pfxAudit, now.UnixNano(), s.node, s.auditSeq.Add(1))
	if err := s.db.Update(func(txn store.Txn) error { return setJSON(txn, key, &e) }); err != nil {
		return fmt.Errorf("origin: audit: %w", err)
	}
	return nil
}

// Audit returns the newest limit entries of the trail, oldest first.
func (s *Server) Audit(limit int) ([]AuditEntry, error) {
	ring := make([]AuditEntry, 0, limit)
	next := 0
	err := s.db.View(func(txn store.Txn) error {
		ring, next = ring[:0], 0
		return txn.Scan(pfxAudit, func(_ string, b []byte) error {
			var e AuditEntry
			if err := json.Unmarshal(b, &e); err != nil {
				return nil // not ours to judge: skip it
			}
			if len(ring) < limit {
				ring = append(ring, e)
			} else {
				ring[next] = e
				next = (next + 1) % limit
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("origin: audit: %w", err)
	}
	return append(ring[next:], ring[:next]...), nil
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authorize(r, wire.RoleAdmin, ""); err != nil {
		s.fail(w, err)
		return
	}
	limit := defaultAuditLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLimit {
			s.fail(w, badRequest("limit must be between 1 and %d", maxAuditLimit))
			return
		}
		limit = n
	}
	out, err := s.Audit(limit)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out})
}
