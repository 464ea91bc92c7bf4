package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/capstan-ota/capstan/release"
)

// SyncFromOrigin pulls every channel record from an origin's snapshot
// (GET /v1/state) and applies the newer ones. Gossip is the normal path;
// this is the bootstrap and the last resort when gossip loses something.
func (s *Server) SyncFromOrigin(ctx context.Context) error {
	b, err := s.fetchSmall(ctx, "/v1/state", 64<<20)
	if err != nil {
		return err
	}
	var snap struct {
		Channels []*release.Envelope `json:"channels"`
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		return fmt.Errorf("edge: origin state: %w", err)
	}
	for _, env := range snap.Channels {
		if env != nil {
			s.Apply(env)
		}
	}
	s.MarkSynced()
	return nil
}

// PollOrigins calls SyncFromOrigin every interval until ctx ends.
func (s *Server) PollOrigins(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.SyncFromOrigin(ctx); err != nil && ctx.Err() == nil {
			s.log.Debug("poll origin state", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
