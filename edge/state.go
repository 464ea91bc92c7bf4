package edge

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-ota/capstan/release"
)

// channelState is one channel as the edge answers it: the newest signed
// record and its encoded form, ready to be written into responses.
type channelState struct {
	env     *release.Envelope
	ch      *release.Channel
	envJSON []byte
	// verified says the record's origin signature was checked (the edge
	// has origin keys); only such records raise the staleness alarm.
	verified bool
	// answers holds finished check answers by status and target (a
	// handful: the record's release and stable one); the record is
	// immutable, so they never go stale (a new record is a new
	// channelState). Read without a lock, copied on write.
	answers   atomic.Pointer[map[answerKey]*answer]
	answersMu sync.Mutex // serialises writers of answers
}

func newChannelState(env *release.Envelope, ch *release.Channel, envJSON []byte, verified bool) *channelState {
	cs := &channelState{env: env, ch: ch, envJSON: envJSON, verified: verified}
	cs.answers.Store(&map[answerKey]*answer{})
	return cs
}

// state maps "app/channel" to the newest record. Readers load the map
// without locking; writers copy it (records change rarely, checks are hot).
type state struct {
	mu      sync.Mutex // serialises writers
	cur     atomic.Pointer[map[string]*channelState]
	updated atomic.Int64 // unix nanos of the last accepted record
}

func newState() *state {
	s := &state{}
	m := map[string]*channelState{}
	s.cur.Store(&m)
	return s
}

func (s *state) get(key string) (*channelState, bool) {
	cs, ok := (*s.cur.Load())[key]
	return cs, ok
}

// apply stores env if it is newer than what the edge holds for its channel.
// It reports whether it was stored.
func (s *state) apply(env *release.Envelope, ch *release.Channel, verified bool) bool {
	b, err := json.Marshal(env)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.cur.Load()
	if prev, ok := old[ch.Key()]; ok && prev.ch.Seq >= ch.Seq {
		return false
	}
	next := make(map[string]*channelState, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[ch.Key()] = newChannelState(env, ch, b, verified)
	s.cur.Store(&next)
	s.updated.Store(time.Now().UnixNano())
	return true
}

func (s *state) all() []*channelState {
	m := *s.cur.Load()
	out := make([]*channelState, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func (s *state) lastUpdate() time.Time {
	n := s.updated.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
