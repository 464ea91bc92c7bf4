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

// Timing of a serving edge's network tasks.
const (
	// defaultPollEvery is Config.PollEvery's default.
	defaultPollEvery = time.Minute
	// joinRetry is how long an edge that cannot join its cluster waits
	// before it tries again.
	joinRetry = 5 * time.Second
)

// startNetwork starts what a serving edge does on its own, for its
// lifetime: joining the cluster (Config.Join) until it succeeds, and
// pulling an origin's state every Config.PollEvery.
func (s *Server) startNetwork() {
	if s.cfg.Join != nil {
		s.background(s.joinLoop)
	}
	if s.cfg.PollEvery > 0 {
		s.background(s.pollLoop)
	}
}

// joinLoop joins the cluster, trying again every joinRetry. Meanwhile the
// edge serves what it holds: an edge restarted while every origin is away
// still answers.
func (s *Server) joinLoop(ctx context.Context) {
	for {
		leave, err := s.cfg.Join(ctx)
		if err == nil {
			s.leaveMu.Lock()
			late := s.left
			if !late {
				s.leave = leave
			}
			s.leaveMu.Unlock()
			if late {
				// Shutdown came first: leave what was just joined.
				lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				leave(lctx)
				cancel()
				return
			}
			s.MarkSynced()
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("cannot join the cluster yet; serving what this edge holds", "err", err)
		if len(s.Records()) > 0 {
			s.MarkSynced()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(joinRetry):
		}
	}
}

// pollLoop pulls an origin's state now and every Config.PollEvery: the
// last resort behind gossip.
func (s *Server) pollLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.PollEvery)
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
