package edge_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/edge"
)

func TestEdgesListsTheFleet(t *testing.T) {
	f := newFleet(t)
	var peers atomic.Pointer[[]edge.Peer]
	set := func(p ...edge.Peer) { peers.Store(&p) }
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	e := startEdge(t, f, t.TempDir(), func(c *edge.Config) {
		c.Region = "eu"
		c.Fleet = func() []edge.Peer { return *peers.Load() }
		c.Now = func() time.Time { return time.Unix(0, now.Load()) }
	})
	long := "http://" + strings.Repeat("a", edge.MaxPeerURLLen) + ":1"
	set(
		edge.Peer{URL: "http://us-1:7080", Region: "us"},
		edge.Peer{URL: "http://eu-2:7080", Region: "eu"},
		edge.Peer{URL: "http://eu-1:7080", Region: "eu"},
		edge.Peer{URL: "http://eu-1:7080", Region: "eu"}, // duplicate
		edge.Peer{URL: "ftp://x:21", Region: "eu"},       // not http
		edge.Peer{URL: long},                             // too long
		edge.Peer{URL: "http://ap-1:7080", Region: strings.Repeat("r", edge.MaxRegionLen+1)},
		edge.Peer{URL: "http://ap-2:7080", Region: "ap"},
	)
	resp, body := get(t, e.url+"/v1/edges")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age=") {
		t.Fatalf("GET /v1/edges: %s %q", resp.Status, resp.Header.Get("Cache-Control"))
	}
	var fr edge.FleetResponse
	if err := json.Unmarshal(body, &fr); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range fr.Edges {
		got = append(got, p.Region+" "+p.URL)
	}
	want := "eu http://eu-1:7080,eu http://eu-2:7080,ap http://ap-2:7080,us http://us-1:7080"
	if fr.Region != "eu" || strings.Join(got, ",") != want {
		t.Fatalf("got region %q edges %v, want eu %s", fr.Region, got, want)
	}

	// The list is rebuilt after a second, and capped.
	var many []edge.Peer
	for i := 0; i < 3*edge.MaxFleetPeers; i++ {
		many = append(many, edge.Peer{URL: fmt.Sprintf("http://e%03d:7080", i), Region: "us"})
	}
	set(many...)
	now.Add(int64(2 * time.Second))
	_, body = get(t, e.url+"/v1/edges")
	if len(body) > edge.MaxFleetBody {
		t.Fatalf("body of %d bytes is over MaxFleetBody", len(body))
	}
	fr = edge.FleetResponse{}
	if err := json.Unmarshal(body, &fr); err != nil || len(fr.Edges) != edge.MaxFleetPeers {
		t.Fatalf("capped list: %v, %d edges", err, len(fr.Edges))
	}
}

func TestEdgesWithoutFleet(t *testing.T) {
	e := startEdge(t, newFleet(t), t.TempDir(), nil)
	resp, body := get(t, e.url+"/v1/edges")
	if resp.StatusCode != 200 || string(body) != `{"edges":[]}` {
		t.Fatalf("GET /v1/edges with no fleet: %s %s", resp.Status, body)
	}
}
