package origin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
)

// postEvents posts events to the origin's handler from remote address
// from, with the bearer token tok ("" for none).
func postEvents(t *testing.T, s *Server, from, tok string, evs []stats.Event) int {
	t.Helper()
	b, _ := json.Marshal(evs)
	r := httptest.NewRequest("POST", "/v1/events", bytes.NewReader(b))
	r.RemoteAddr = from + ":40000"
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	return w.Code
}

// failures makes one revert per device dev-<first>…, from addresses
// 198.51.100.<i % addrs>.
func failures(rel release.Hash, first, n, addrs int) []stats.Event {
	var evs []stats.Event
	for i := first; i < first+n; i++ {
		evs = append(evs, stats.Event{Action: stats.ActionRevert, App: "com.x", Channel: "production",
			Device: fmt.Sprintf("dev-%d", i), Release: rel, Addr: fmt.Sprintf("198.51.100.%d", i%addrs)})
	}
	return evs
}

// TestAutoPauseNeedsManyAddresses is finding 4 of issue 16: twenty fake
// events in one request paused a rollout. Failures must now come from
// several network addresses as the edges saw them (device ids are made
// up at will); a caller that is not an edge of the cluster cannot name
// addresses; each device counts once. A paused 100 % release keeps its
// devices and offers new devices the release the channel served before.
func TestAutoPauseNeedsManyAddresses(t *testing.T) {
	cfg := DefaultConfig(t.TempDir())
	cfg.AdminKey = trustAdminKey
	cfg.PrecomputeBases = -1
	cfg.EventsTokens = func() []string { return []string{"edge-token"} }
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v1 := uploadTo(t, s, "com.x", "1.0.0", "production")
	v2 := uploadTo(t, s, "com.x", "1.1.0", "production")
	paused := func() bool {
		_, c, err := s.st.channel("com.x", "production")
		if err != nil {
			t.Fatal(err)
		}
		return c.Paused
	}

	// 30 devices failing, all from one address: one host making them up.
	if code := postEvents(t, s, "192.0.2.10", "edge-token", failures(v2.ID, 0, 30, 1)); code != 200 {
		t.Fatalf("events from an edge: %d", code)
	}
	if paused() {
		t.Fatal("30 failures from one address paused the rollout")
	}
	// The same device failing 50 times, as far as the sketch can tell,
	// is one failed device.
	same := failures(v2.ID, 0, 1, 1)
	for range 50 {
		postEvents(t, s, "192.0.2.10", "edge-token", same)
	}
	rep, err := s.Stats("com.x", "production")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Channels[0].Releases {
		if r.Version == "1.1.0" && (r.FailedDevices != 30 || r.FailedAddresses != 1) {
			t.Fatalf("1.1.0: %d failed devices from %d addresses, want 30 from 1", r.FailedDevices, r.FailedAddresses)
		}
	}
	// Anyone else posting straight to the origin needs the token…
	if code := postEvents(t, s, "203.0.113.5", "", failures(v2.ID, 100, 30, 30)); code != http.StatusUnauthorized {
		t.Fatalf("events without the cluster's token: %d, want 401", code)
	}
	// …and on an origin with no token at all, the addresses it names are
	// replaced by its own.
	open := gcServer(t, GCConfig{}, BuildBudget{})
	uploadTo(t, open, "com.x", "1.0.0", "production")
	u2 := uploadTo(t, open, "com.x", "1.1.0", "production")
	if code := postEvents(t, open, "203.0.113.5", "", failures(u2.ID, 0, 40, 40)); code != 200 {
		t.Fatalf("events to an origin without a token: %d", code)
	}
	if _, c, _ := open.st.channel("com.x", "production"); c.Paused {
		t.Fatal("made-up addresses posted to the origin paused a rollout")
	}

	// Real failures: 20 more devices over 10 addresses.
	postEvents(t, s, "192.0.2.10", "edge-token", failures(v2.ID, 30, 20, 10))
	if !paused() {
		t.Fatal("failures from 11 addresses did not pause the rollout")
	}
	rep, _ = s.Stats("com.x", "production")
	for _, r := range rep.Channels[0].Releases {
		if r.Version == "1.1.0" && (r.AutoPaused == nil || r.AutoPaused.FailedAddresses < DefaultAutoPauseMinAddresses) {
			t.Fatalf("auto-pause record: %+v", r.AutoPaused)
		}
	}
	// Paused at 100 %: devices on 1.1.0 keep it, new devices get 1.0.0.
	_, c, _ := s.st.channel("com.x", "production")
	if got, ok := c.Target("new-device", release.Hash{}); !ok || got.ID != v1.ID {
		t.Fatalf("a new device is offered %+v (ok %v), want 1.0.0", got, ok)
	}
	if got, ok := c.Target("dev-3", v2.ID); !ok || got.ID != v2.ID {
		t.Fatalf("a device on the paused release is offered %+v (ok %v), want to stay on 1.1.0", got, ok)
	}
}
