package gossip

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
)

func TestMetaValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta Meta
		ok   bool
	}{
		{"origin", Meta{Role: RoleOrigin, HTTP: "http://127.0.0.1:7070"}, true},
		{"edge with region", Meta{Role: RoleEdge, HTTP: "https://edge-1.example.com", Region: "eu-west"}, true},
		{"no http", Meta{Role: RoleEdge}, true},
		{"longest fields", Meta{Role: RoleEdge, HTTP: "http://" + strings.Repeat("a", MaxHTTPLen-7), Region: strings.Repeat("r", MaxRegionLen)}, true},
		{"no role", Meta{HTTP: "http://x"}, false},
		{"unknown role", Meta{Role: "device"}, false},
		{"not a url", Meta{Role: RoleEdge, HTTP: "127.0.0.1:7080"}, false},
		{"ftp", Meta{Role: RoleEdge, HTTP: "ftp://x"}, false},
		{"http too long", Meta{Role: RoleEdge, HTTP: "http://" + strings.Repeat("a", MaxHTTPLen)}, false},
		{"region too long", Meta{Role: RoleEdge, Region: strings.Repeat("r", MaxRegionLen+1)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.meta.encode()
			if (err == nil) != tc.ok {
				t.Fatalf("encode: err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				if !strings.HasPrefix(err.Error(), "gossip: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if len(b) > 512 {
				t.Fatalf("encoded meta is %d bytes", len(b))
			}
			got, err := decodeMeta(b)
			if err != nil || got != tc.meta {
				t.Fatalf("round trip: %+v, %v; want %+v", got, err, tc.meta)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"bad meta", func(c *Config) { c.Meta.Region = strings.Repeat("r", 600) }},
		{"bad bind", func(c *Config) { c.BindAddr = "127.0.0.1" }},
		{"bad advertise", func(c *Config) { c.AdvertiseAddr = "x:y" }},
		{"bad key", func(c *Config) { c.SecretKey = []byte("short") }},
		{"long label", func(c *Config) { c.Label = strings.Repeat("l", 256) }},
		{"probe timeout", func(c *Config) { c.ProbeTimeout = 2 * c.ProbeInterval }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(RoleEdge)
			tc.edit(&cfg)
			n, err := New(cfg)
			if err == nil {
				_ = n.Shutdown()
				t.Fatal("New accepted a bad config")
			}
			if !strings.HasPrefix(err.Error(), "gossip: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestNewJoinFails(t *testing.T) {
	cfg := testConfig(RoleEdge, "127.0.0.1:1")
	cfg.JoinTimeout = 300 * time.Millisecond
	n, err := New(cfg)
	if err == nil {
		_ = n.Shutdown()
		t.Fatal("New succeeded without a reachable seed")
	}
}

func TestNewDoesNotMutateConfig(t *testing.T) {
	cfg := testConfig(RoleOrigin)
	cfg.Logger = nil
	cfg.Name = ""
	cfg.SecretKey = bytes.Repeat([]byte{7}, 32)
	cfg.Join = nil
	before := cfg
	before.SecretKey = bytes.Clone(cfg.SecretKey)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if !reflect.DeepEqual(cfg, before) {
		t.Fatalf("New changed the config:\n got %+v\nwant %+v", cfg, before)
	}
	if strings.HasSuffix(n.Addr(), ":0") {
		t.Fatalf("Addr %q does not report the chosen port", n.Addr())
	}
	if n.Name() == "" {
		t.Fatal("no default name")
	}
}

// startSingle starts a node that joins nobody.
func startSingle(t *testing.T, cfg Config) (*Node, *recorder) {
	t.Helper()
	c := newCluster(t)
	return c.start(cfg)
}

func TestPublishErrors(t *testing.T) {
	key := testKey(t)
	n, rec := startSingle(t, testConfig(RoleOrigin))

	if err := n.Publish(signedRecord(t, key, "app", "prod", 5)); err != nil {
		t.Fatal(err)
	}
	// The identical record again is a no-op.
	if err := n.Publish(signedRecord(t, key, "app", "prod", 5)); err != nil {
		t.Fatalf("republish identical: %v", err)
	}
	// Same Seq, other content; and an older Seq.
	ch, _ := signedRecord(t, key, "app", "prod", 5).Channel()
	ch.RolloutBPS = 5000
	b, err := ch.Encode()
	if err != nil {
		t.Fatal(err)
	}
	other := release.Seal(b, key)
	if err := n.Publish(other); !errors.Is(err, ErrStale) {
		t.Fatalf("same seq, other content: err = %v, want ErrStale", err)
	}
	if err := n.Publish(signedRecord(t, key, "app", "prod", 4)); !errors.Is(err, ErrStale) {
		t.Fatalf("older seq: err = %v, want ErrStale", err)
	}
	if got := rec.get("app/prod"); !reflect.DeepEqual(got, []uint64{5}) {
		t.Fatalf("OnRecord calls %v, want [5]", got)
	}

	// Too large: eight signatures push a record over one packet.
	big := signedRecord(t, key, "app", "beta", 1)
	for range release.MaxSignatures - 1 {
		big.Sign(testKey(t))
	}
	if err := n.Publish(big); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("big record: err = %v, want ErrRecordTooLarge", err)
	}

	// Not a channel record.
	if err := n.Publish(release.Seal([]byte(`{"type":"capstan.release/v1"}`), key)); err == nil {
		t.Fatal("published a non-channel document")
	}
	if err := n.Publish(nil); err == nil {
		t.Fatal("published nil")
	}
	// Signed bytes that json.Marshal would rewrite (not compact).
	looseEnv := signedRecord(t, key, "app", "loose", 1)
	loose := release.Seal(append([]byte(" "), looseEnv.Signed...), key)
	if err := n.Publish(loose); err == nil {
		t.Fatal("published non-compact signed bytes")
	}

	if got := len(n.Records()); got != 1 {
		t.Fatalf("holding %d records, want 1", got)
	}
	if n.LastUpdate().IsZero() {
		t.Fatal("LastUpdate not set")
	}
}

// TestRecordSizes documents how large real records are against the limit.
func TestRecordSizes(t *testing.T) {
	key := testKey(t)
	typical, err := encodeRecord(signedRecord(t, key, "com.example.app", "production", 42))
	if err != nil {
		t.Fatal(err)
	}
	// Longest identifiers the release package allows, with a stable ref
	// and two signatures (key rotation) still fit.
	now := time.Now().UTC()
	long := release.Channel{
		App:        strings.Repeat("a", release.MaxAppLen),
		Channel:    strings.Repeat("c", release.MaxAppLen),
		Seq:        1<<64 - 1,
		Release:    release.Ref{Version: "1.2.3-" + strings.Repeat("x", 40), ID: release.Sum([]byte("r"))},
		RolloutBPS: 1234,
		Stable:     &release.Ref{Version: "1.2.2-" + strings.Repeat("y", 40), ID: release.Sum([]byte("s"))},
		Paused:     true,
		Issued:     now,
		Expires:    now.Add(time.Hour),
	}
	b, err := long.Encode()
	if err != nil {
		t.Fatal(err)
	}
	worst, err := encodeRecord(release.Seal(b, key, testKey(t)))
	if err != nil {
		t.Fatalf("longest realistic record: %v", err)
	}
	t.Logf("record message: typical %d B, longest identifiers + 2 signatures %d B, limit %d B",
		len(typical.wire), len(worst.wire), MaxRecordBytes)
}

// TestOutOfOrder feeds shuffled records for two channels straight into the
// delegate from several goroutines: only newer records are stored,
// reported and queued.
func TestOutOfOrder(t *testing.T) {
	key := testKey(t)
	n, rec := startSingle(t, testConfig(RoleEdge))

	var wires [][]byte
	const top = 40
	for seq := uint64(1); seq <= top; seq++ {
		for _, ch := range []string{"prod", "beta"} {
			r, err := encodeRecord(signedRecord(t, key, "app", ch, seq))
			if err != nil {
				t.Fatal(err)
			}
			wires = append(wires, r.wire)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(wires), func(i, j int) { wires[i], wires[j] = wires[j], wires[i] })

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < len(wires); i += 4 {
				n.d.NotifyMsg(wires[i])
			}
		}()
	}
	wg.Wait()

	for _, key := range []string{"app/prod", "app/beta"} {
		env, ok := n.Record(key)
		if !ok || seqOf(t, env) != top {
			t.Fatalf("%s: holding %v, want seq %d", key, env, top)
		}
		seqs := rec.get(key)
		if len(seqs) == 0 || seqs[len(seqs)-1] != top {
			t.Fatalf("%s: OnRecord saw %v, want it to end at %d", key, seqs, top)
		}
	}
	rec.checkIncreasing(t, "node")
	// Named broadcasts: at most one queued record per channel.
	if q := n.queue.NumQueued(); q > 2 {
		t.Fatalf("%d broadcasts queued for 2 channels", q)
	}

	// Everything again, and an old state by push/pull: nothing changes.
	calls := len(rec.get("app/prod")) + len(rec.get("app/beta"))
	for _, w := range wires {
		n.d.NotifyMsg(w)
	}
	old := signedRecord(t, key, "app", "prod", 3)
	r, _ := encodeRecord(old)
	n.d.MergeRemoteState(encodeState([]*record{r}), false)
	if got := len(rec.get("app/prod")) + len(rec.get("app/beta")); got != calls {
		t.Fatalf("OnRecord called %d more times for stale records", got-calls)
	}
	if env, _ := n.Record("app/prod"); seqOf(t, env) != top {
		t.Fatal("went back to an older record")
	}
}

// TestVerifyDropsWithoutRelay checks at one node that a record failing
// Verify is neither stored, nor queued, nor reported; Publish returns the
// Verify error.
func TestVerifyDropsWithoutRelay(t *testing.T) {
	trusted, rogue := testKey(t), testKey(t)
	errUntrusted := errors.New("untrusted")
	cfg := testConfig(RoleEdge)
	cfg.Verify = func(env *release.Envelope, ch *release.Channel) error {
		if env.Verify([]ed25519.PublicKey{trusted.Public().(ed25519.PublicKey)}) != nil {
			return errUntrusted
		}
		return nil
	}
	n, rec := startSingle(t, cfg)

	bad, _ := encodeRecord(signedRecord(t, rogue, "app", "prod", 9))
	n.d.NotifyMsg(bad.wire)
	n.d.MergeRemoteState(encodeState([]*record{bad}), true)
	if len(n.Records()) != 0 || n.queue.NumQueued() != 0 || len(rec.get("app/prod")) != 0 {
		t.Fatalf("rejected record kept: %d records, %d queued", len(n.Records()), n.queue.NumQueued())
	}
	if err := n.Publish(signedRecord(t, rogue, "app", "prod", 9)); !errors.Is(err, errUntrusted) {
		t.Fatalf("Publish of a rejected record: err = %v", err)
	}

	good, _ := encodeRecord(signedRecord(t, trusted, "app", "prod", 1))
	n.d.NotifyMsg(good.wire)
	if !hasSeq(n, "app/prod", 1) || n.queue.NumQueued() != 1 {
		t.Fatal("a good record with a lower Seq than the rejected one was not accepted and queued")
	}
}

func TestStateBounds(t *testing.T) {
	key := testKey(t)
	r, _ := encodeRecord(signedRecord(t, key, "app", "prod", 1))
	good := encodeState([]*record{r})

	hugeCount := bytes.Clone(good)
	binary.BigEndian.PutUint32(hugeCount[1:], 1<<31)
	countOverBytes := bytes.Clone(good)
	binary.BigEndian.PutUint32(countOverBytes[1:], 1000)
	longRec := bytes.Clone(good)
	binary.BigEndian.PutUint16(longRec[5:], 0xffff)
	badFormat := bytes.Clone(good)
	badFormat[0] = 99

	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"good", good, true},
		{"empty", nil, true},
		{"huge count", hugeCount, false},
		{"count over bytes", countOverBytes, false},
		{"record over limit", longRec, false},
		{"truncated", good[:len(good)-1], false},
		{"trailing", append(bytes.Clone(good), 0), false},
		{"unknown format", badFormat, false},
		{"short header", good[:3], false},
		{"over max state", make([]byte, MaxStateBytes+1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := splitState(tc.b)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}

	// A node fed garbage by push/pull or broadcast keeps nothing and does
	// not panic.
	n, _ := startSingle(t, testConfig(RoleEdge))
	n.d.MergeRemoteState(hugeCount, true)
	n.d.MergeRemoteState(longRec, false)
	n.d.NotifyMsg([]byte{msgRecord, '{'})
	n.d.NotifyMsg(nil)
	n.d.NotifyMsg(bytes.Repeat([]byte{msgRecord}, MaxRecordBytes+1))
	if len(n.Records()) != 0 {
		t.Fatal("garbage was stored")
	}
}

func FuzzSplitState(f *testing.F) {
	f.Add([]byte{stateFormat, 0, 0, 0, 1, 0, 2, msgRecord, '{'})
	f.Add([]byte{stateFormat, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := splitState(b)
		if err != nil {
			return
		}
		for _, m := range msgs {
			if len(m) > MaxRecordBytes {
				t.Fatalf("record of %d bytes passed", len(m))
			}
			_, _ = decodeRecord(m)
		}
	})
}

func TestLogBridge(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	std := newStdLogger(l)
	std.Printf("[ERR] memberlist: Failed to send gossip to %s: boom", "1.2.3.4")
	std.Printf("[WARN] memberlist: Was able to connect to x but other probes failed")
	std.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:1")
	std.Printf("[INFO] memberlist: Marking x as failed")
	std.Printf("Err: Could not set the deadline")
	got := buf.String()
	for _, want := range []string{
		`level=ERROR msg="memberlist: Failed to send gossip to 1.2.3.4: boom" component=memberlist`,
		`level=WARN msg="memberlist: Was able`,
		`level=DEBUG msg="memberlist: Stream connection`,
		`level=INFO msg="memberlist: Marking x as failed"`,
		`level=INFO msg="Err: Could not set the deadline"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}

	// With Info level, DEBUG lines are dropped.
	buf.Reset()
	l = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	newStdLogger(l).Printf("[DEBUG] memberlist: noisy")
	if buf.Len() != 0 {
		t.Fatalf("DEBUG line logged at Info level: %s", buf.String())
	}
}

func TestLeaveAfterShutdown(t *testing.T) {
	n, err := New(testConfig(RoleEdge))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := n.Leave(context.Background()); err == nil {
		t.Fatal("Leave after Shutdown succeeded")
	}
}
