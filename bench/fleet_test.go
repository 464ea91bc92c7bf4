package bench

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// fakeEdge serves unsigned check answers for app/production pointing at
// the last of versions, and every release by ID.
func fakeEdge(t *testing.T, versions ...string) (*httptest.Server, []release.Hash) {
	t.Helper()
	envs := map[release.Hash]*release.Envelope{}
	var ids []release.Hash
	for _, v := range versions {
		m := release.Manifest{App: "com.example.fleet", Version: v, Files: []release.File{
			{Path: "index.html", Size: 1, Mode: 0o644, SHA256: release.Sum([]byte(v))},
		}}
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		env := release.Seal(b)
		envs[env.ID()] = env
		ids = append(ids, env.ID())
	}
	cur := ids[len(ids)-1]
	ch := release.Channel{App: "com.example.fleet", Channel: "production", Seq: 1,
		Release: release.Ref{Version: versions[len(versions)-1], ID: cur}, RolloutBPS: release.FullRollout,
		Issued: time.Now(), Expires: time.Now().Add(time.Hour)}
	cb, err := ch.Encode()
	if err != nil {
		t.Fatal(err)
	}
	chEnv := release.Seal(cb)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/check":
			ans := wire.CheckAnswer{Status: "up-to-date", Channel: chEnv}
			if r.URL.Query().Get("current") != cur.String() {
				ans.Status, ans.Release = "update", envs[cur]
			}
			json.NewEncoder(w).Encode(ans)
		case strings.HasPrefix(r.URL.Path, "/v1/releases/"):
			id, err := release.ParseHash(strings.TrimPrefix(r.URL.Path, "/v1/releases/"))
			if err != nil || envs[id] == nil {
				http.NotFound(w, r)
				return
			}
			json.NewEncoder(w).Encode(envs[id])
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, ids
}

func TestBuildFleet(t *testing.T) {
	srv, ids := fakeEdge(t, "1.0.0", "1.1.0", "1.2.0", "2.0.0")
	tests := []struct {
		name     string
		fleet    string
		releases []string
		want     map[string]string // class → versions
	}{
		{"all classes", "prev=70,older=10,current=20", []string{ids[0].String(), ids[1].String(), ids[2].String()},
			map[string]string{"prev": "1.2.0", "older": "1.0.0,1.1.0", "current": "2.0.0"}},
		{"one older release", "prev=50,older=25,current=25", []string{ids[2].String()},
			map[string]string{"prev": "1.2.0", "older": "1.2.0", "current": "2.0.0"}},
		{"no release list", "prev=50,older=25,none=25", nil,
			map[string]string{"prev": "builtin", "older": "builtin", "none": "builtin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Edges, cfg.App, cfg.Channel = []string{srv.URL}, "com.example.fleet", "production"
			cfg.Devices, cfg.Fleet, cfg.Releases = 101, tt.fleet, tt.releases
			b, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.buildFleet(t.Context(), b.shares); err != nil {
				t.Fatal(err)
			}
			total := 0
			for _, c := range b.fleet {
				total += c.Devices
				if got := strings.Join(c.Versions, ","); got != tt.want[c.Class] {
					t.Errorf("class %s runs %s, want %s", c.Class, got, tt.want[c.Class])
				}
			}
			if total != 101 || len(b.devices) != 101 {
				t.Errorf("fleet has %d devices (%d built), want 101", total, len(b.devices))
			}
			ids := map[string]bool{}
			pop := 0
			for _, d := range b.devices {
				ids[d.id] = true
			}
			for _, n := range b.pop {
				pop += n
			}
			if len(ids) != 101 || pop != 101 {
				t.Errorf("%d distinct ids, population %d; want 101 and 101", len(ids), pop)
			}
		})
	}
}

func TestBuildFleetVersionsNeedOrigin(t *testing.T) {
	srv, _ := fakeEdge(t, "1.0.0", "2.0.0")
	cfg := DefaultConfig()
	cfg.Edges, cfg.App, cfg.Channel, cfg.Releases = []string{srv.URL}, "com.example.fleet", "production", []string{"1.0.0"}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = b.buildFleet(t.Context(), b.shares)
	if err == nil || !strings.Contains(err.Error(), "origin API") {
		t.Fatalf("err = %v, want a hint that versions need the origin API", err)
	}
}
