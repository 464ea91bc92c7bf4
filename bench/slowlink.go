package bench

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/capgo/capgotest"
	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/internal/netsim"
	"github.com/capstan-ota/capstan/release"
	"github.com/dustin/go-humanize"
)

// ScenarioSlowLink times single updates over a slow mobile link instead of
// loading the edges with a fleet: see SlowLink.
const ScenarioSlowLink = "slow-link"

// capgoPluginVersion is the @capgo/capacitor-updater version the file-level
// client presents (the one docs/capgo.md was checked against); any version
// that gets manifest answers behaves the same.
const capgoPluginVersion = "8.51.14"

// Pair is one update to time: a device on From updates to To (versions of
// the app).
type Pair struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// ParsePairs parses "1.0.0:1.0.1,1.0.1:1.1.0".
func ParsePairs(s string) ([]Pair, error) {
	var out []Pair
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		from, to, ok := strings.Cut(part, ":")
		from, to = strings.TrimSpace(from), strings.TrimSpace(to)
		if !ok || from == "" || to == "" || from == to {
			return nil, fmt.Errorf("bench: pair %q: want FROM:TO, two different versions", part)
		}
		out = append(out, Pair{From: from, To: to})
	}
	if len(out) == 0 {
		return nil, errors.New("bench: no pair given (want FROM:TO[,FROM:TO…])")
	}
	return out, nil
}

// SlowLinkConfig configures a SlowLink. Zero values mean the documented
// defaults unless said otherwise.
type SlowLinkConfig struct {
	// Edge is the base URL of the edge both clients reach through the
	// simulated link. Required.
	Edge string
	// App and Channel are what the clients follow. Channel must be one a
	// Capgo device may follow (the app's default channel, or one that
	// allows device selection). Required.
	App, Channel string
	// Pairs are the updates to time, as versions of App. Required.
	Pairs []Pair
	// Origin moves Channel, for each pair, to From (the clients install it
	// over the fast path) and then to To (the timed update). The channel
	// is put back on the release it served at the start. Required.
	Origin Origin
	// Keys are the trusted release and origin keys the Capstan device
	// verifies with; empty skips signature checks.
	Keys []release.PublicKey
	// NativeVersion is the native app version both clients report
	// (default 1.0.0 for the Capgo client, which must send one).
	NativeVersion string
	// Down and Up are the link's rates in bits per second (default
	// 1.6 Mbit/s and 750 kbit/s); RTT is its round trip (default 150 ms).
	// The defaults are Lighthouse's mobile throttling ("slow 4G").
	Down, Up int64
	RTT      time.Duration
	// Dir holds the clients' folders; empty means a temporary folder,
	// removed at the end.
	Dir string
	// Wait bounds each wait for the origin and edges: a channel move
	// reaching the edge, a patch or a Capgo payload being built (default
	// 10 minutes, for large bundles on a loaded machine).
	Wait time.Duration
	// Logger receives progress notes; nil discards them.
	Logger *slog.Logger
}

// DefaultSlowLinkConfig returns the defaults.
func DefaultSlowLinkConfig() SlowLinkConfig {
	return SlowLinkConfig{Down: 1_600_000, Up: 750_000, RTT: 150 * time.Millisecond, Wait: 10 * time.Minute}
}

// SlowLink times, for each pair, one update over a slow link (a
// netsim.Proxy in front of the edge: a token bucket per direction, half
// the round trip each way, one round trip per new connection) by two
// clients, one after the other:
//
//   - Capstan: the reference device (package device, as `capstan device`
//     runs it): check, download, verify and install, whatever the current
//     protocol makes it fetch;
//   - file level: a @capgo/capacitor-updater client in manifest mode
//     (package capgotest, the plugin's algorithm) against the edge's Capgo
//     endpoints: the update answer lists every file, and the client
//     fetches, 8 at a time, each file it does not hold, Brotli-compressed
//     from 8 KiB, as Capgo's manifest mode sends them.
//
// Both start from the From release installed over the fast path, and both
// are warmed first by an identical client over the fast path, so that
// neither waits for the origin to build a patch or a Brotli payload.
type SlowLink struct {
	cfg SlowLinkConfig
}

// NewSlowLink validates cfg and returns a SlowLink. It sends no request.
func NewSlowLink(cfg SlowLinkConfig) (*SlowLink, error) {
	d := DefaultSlowLinkConfig()
	u, err := url.Parse(cfg.Edge)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("bench: slow link: edge %q: want an http URL (the link is simulated on plain TCP)", cfg.Edge)
	}
	cfg.Edge = strings.TrimRight(cfg.Edge, "/")
	if err := release.ValidateApp(cfg.App); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := release.ValidateChannel(cfg.Channel); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if len(cfg.Pairs) == 0 {
		return nil, errors.New("bench: slow link: no pair to time (FROM:TO)")
	}
	if cfg.Origin == nil {
		return nil, errors.New("bench: slow link: the origin API is needed to move the channel (CAPSTAN_SERVER, CAPSTAN_API_KEY)")
	}
	if cfg.Down < 0 || cfg.Up < 0 || cfg.RTT < 0 {
		return nil, errors.New("bench: slow link: negative rate or round trip")
	}
	if cfg.Down == 0 {
		cfg.Down = d.Down
	}
	if cfg.Up == 0 {
		cfg.Up = d.Up
	}
	if cfg.RTT == 0 {
		cfg.RTT = d.RTT
	}
	if cfg.Wait <= 0 {
		cfg.Wait = d.Wait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Pairs = append([]Pair(nil), cfg.Pairs...)
	return &SlowLink{cfg: cfg}, nil
}

// SlowLinkResult is what Run measured.
type SlowLinkResult struct {
	Edge    string `json:"edge"`
	App     string `json:"app"`
	Channel string `json:"channel"`
	// DownBPS and UpBPS are the link's rates in bits per second; RTTMS its
	// round trip.
	DownBPS int64        `json:"down_bps"`
	UpBPS   int64        `json:"up_bps"`
	RTTMS   float64      `json:"rtt_ms"`
	Pairs   []PairResult `json:"pairs"`
}

// PairResult is one pair's two updates.
type PairResult struct {
	Pair
	Capstan LinkRun `json:"capstan"`
	// Files is the file-level download (Capgo manifest mode).
	Files LinkRun `json:"files"`
	// TimeRatio is Capstan's update time over the file-level one.
	TimeRatio float64 `json:"time_ratio"`
}

// LinkRun is one timed update over the link.
type LinkRun struct {
	// Seconds is the wall time from the first request to the installed
	// bundle.
	Seconds float64 `json:"seconds"`
	// Bytes is what the client counted: the device's own "bytes" (every
	// response body as it crossed the network), or for the file level the
	// update answer plus the file payloads, counted the same way.
	Bytes int64 `json:"bytes"`
	// WireDown and WireUp are the bytes through the link each way, HTTP
	// headers and requests included.
	WireDown int64 `json:"wire_down"`
	WireUp   int64 `json:"wire_up"`
	// Conns is the number of TCP connections the client opened.
	Conns int64 `json:"conns"`
	// Mode is how the client updated: the device's mode (delta, full,
	// files), or manifest or zip for the file level.
	Mode string `json:"mode"`
	// Files is the number of files the file-level client downloaded.
	Files int `json:"files,omitempty"`
}

// Run times every pair and restores the channel. It stops at the first
// pair that fails.
func (s *SlowLink) Run(ctx context.Context) (res *SlowLinkResult, err error) {
	cfg := s.cfg
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "capstan-slowlink-"); err != nil {
			return nil, fmt.Errorf("bench: slow link: %w", err)
		}
		defer os.RemoveAll(dir)
	}
	res = &SlowLinkResult{Edge: cfg.Edge, App: cfg.App, Channel: cfg.Channel, DownBPS: cfg.Down, UpBPS: cfg.Up,
		RTTMS: float64(cfg.RTT) / float64(time.Millisecond)}
	// What the channel serves now, to put it back at the end.
	probe := filepath.Join(dir, "probe")
	was, err := s.offered(ctx, probe)
	if err != nil {
		return nil, err
	}
	defer func() {
		if was == "" {
			return
		}
		if rerr := s.move(ctx, probe, was); rerr != nil && err == nil {
			err = rerr
		}
	}()
	for i, p := range cfg.Pairs {
		pr, err := s.pair(ctx, filepath.Join(dir, fmt.Sprintf("pair-%d", i)), probe, p)
		if err != nil {
			return res, fmt.Errorf("bench: slow link %s → %s: %w", p.From, p.To, err)
		}
		res.Pairs = append(res.Pairs, *pr)
	}
	return res, nil
}

// pair prepares and times one pair.
func (s *SlowLink) pair(ctx context.Context, dir, probe string, p Pair) (*PairResult, error) {
	log := s.cfg.Logger.With("from", p.From, "to", p.To)
	log.Info("slow link: installing the base over the fast path")
	if err := s.move(ctx, probe, p.From); err != nil {
		return nil, err
	}
	devWarm, devTimed := filepath.Join(dir, "capstan-warm"), filepath.Join(dir, "capstan")
	for _, d := range []string{devWarm, devTimed} {
		if _, err := s.capstan(ctx, d, s.cfg.Edge, p.From, s.cfg.Wait); err != nil {
			return nil, fmt.Errorf("install the base: %w", err)
		}
	}
	cgWarm, cgTimed := s.capgoDevice(filepath.Join(dir, "capgo-warm")), s.capgoDevice(filepath.Join(dir, "capgo"))
	for _, d := range []*capgotest.Device{cgWarm, cgTimed} {
		if _, err := s.capgoUpdate(ctx, d, s.cfg.Edge, p.From, s.cfg.Wait); err != nil {
			return nil, fmt.Errorf("install the base (file level): %w", err)
		}
	}
	if err := s.move(ctx, probe, p.To); err != nil {
		return nil, err
	}
	// Warm-ups over the fast path: the origin builds the patch and the
	// Brotli payloads, the edge caches them.
	log.Info("slow link: warming the edge over the fast path")
	if r, err := s.capstan(ctx, devWarm, s.cfg.Edge, p.To, s.cfg.Wait); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	} else if r.Mode != device.ModeDelta {
		log.Warn("slow link: the warm-up device did not get a patch", "mode", r.Mode)
	}
	if _, err := s.capgoUpdate(ctx, cgWarm, s.cfg.Edge, p.To, s.cfg.Wait); err != nil {
		return nil, fmt.Errorf("warm-up (file level): %w", err)
	}

	log.Info("slow link: timing both updates")
	pr := &PairResult{Pair: p}
	run := func(into *LinkRun, fn func(edge string) (LinkRun, error)) error {
		px, err := s.link()
		if err != nil {
			return err
		}
		defer px.Close()
		start := time.Now()
		r, err := fn("http://" + px.Addr())
		if err != nil {
			return err
		}
		r.Seconds = time.Since(start).Seconds()
		st := px.Stats()
		r.WireDown, r.WireUp, r.Conns = st.Down, st.Up, st.Conns
		if st.Down == 0 {
			return errors.New("nothing went through the simulated link")
		}
		*into = r
		return nil
	}
	err := run(&pr.Capstan, func(edge string) (LinkRun, error) {
		r, err := s.capstan(ctx, devTimed, edge, p.To, 0)
		if err != nil {
			return LinkRun{}, err
		}
		return LinkRun{Bytes: r.Bytes, Mode: r.Mode}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("capstan over the slow link: %w", err)
	}
	err = run(&pr.Files, func(edge string) (LinkRun, error) {
		return s.capgoUpdate(ctx, cgTimed, edge, p.To, 0)
	})
	if err != nil {
		return nil, fmt.Errorf("file level over the slow link: %w", err)
	}
	if pr.Files.Seconds > 0 {
		pr.TimeRatio = pr.Capstan.Seconds / pr.Files.Seconds
	}
	log.Info("slow link: done", "capstan_s", pr.Capstan.Seconds, "files_s", pr.Files.Seconds)
	return pr, nil
}

// link starts a proxy in front of the edge that models the slow link.
func (s *SlowLink) link() (*netsim.Proxy, error) {
	u, _ := url.Parse(s.cfg.Edge)
	host := u.Host
	if u.Port() == "" {
		host += ":80"
	}
	return netsim.NewProxyWith(netsim.ProxyConfig{
		Listen: "127.0.0.1:0", Target: host, OneWay: s.cfg.RTT / 2,
		Down: s.cfg.Down / 8, Up: s.cfg.Up / 8, Handshake: true,
	})
}

// newDevice opens the Capstan device in dir, talking to edge only (no
// ranking: the ranking would find the edge's own URL, off the link). A
// positive wait lets a request wait that long for an answer (warm-ups that
// may wait for a patch build); zero keeps the device's default.
func (s *SlowLink) newDevice(dir, edge string, wait time.Duration) (*device.Device, error) {
	return device.New(device.Config{
		Dir: dir, Edges: []string{edge}, App: s.cfg.App, Channel: s.cfg.Channel,
		DeviceID: "slowlink-" + filepath.Base(filepath.Dir(dir)) + "-" + filepath.Base(dir),
		Ranking:  device.RankConfig{Off: true}, Keys: s.cfg.Keys, NativeVersion: s.cfg.NativeVersion,
		NoEvents: true, RequestTimeout: wait,
		// The base may wait long for its update on a loaded machine; it
		// must not be reverted as unconfirmed meanwhile.
		ConfirmTimeout: -1,
	})
}

// capstan runs one update of the device in dir and checks it installed
// want.
func (s *SlowLink) capstan(ctx context.Context, dir, edge, want string, wait time.Duration) (device.Result, error) {
	d, err := s.newDevice(dir, edge, wait)
	if err != nil {
		return device.Result{}, err
	}
	r := d.Update(ctx)
	if r.Status != device.StatusUpdated || r.To != want {
		return r, fmt.Errorf("device update: %s → %s, want %s (%s)", orDash(r.From), orDash(r.To), want, orDash(r.Error))
	}
	return r, nil
}

// offered returns the version the channel offers a new device ("" when it
// offers the builtin bundle or nothing).
func (s *SlowLink) offered(ctx context.Context, probe string) (string, error) {
	os.RemoveAll(probe)
	d, err := s.newDevice(probe, s.cfg.Edge, 0)
	if err != nil {
		return "", err
	}
	r := d.Check(ctx)
	switch r.Status {
	case device.StatusAvail:
		return r.To, nil
	case device.StatusUpToDate:
		return "", nil
	}
	return "", fmt.Errorf("bench: slow link: check %s/%s: %s", s.cfg.App, s.cfg.Channel, r.Error)
}

// move points the channel at version and waits until the edge offers it.
func (s *SlowLink) move(ctx context.Context, probe, version string) error {
	full := 100.0
	if _, err := s.cfg.Origin.SetChannel(ctx, s.cfg.App, s.cfg.Channel, version, &full, nil); err != nil {
		return fmt.Errorf("bench: slow link: point %s/%s at %s: %w", s.cfg.App, s.cfg.Channel, version, err)
	}
	deadline := time.Now().Add(s.cfg.Wait)
	for {
		v, err := s.offered(ctx, probe)
		if err == nil && v == version {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: slow link: the edge does not offer %s after %s (offers %q, %v)", version, s.cfg.Wait, v, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// capgoDevice is a Capgo plugin install in dir; its URLs are set per run.
func (s *SlowLink) capgoDevice(dir string) *capgotest.Device {
	native := s.cfg.NativeVersion
	if native == "" {
		native = "1.0.0"
	}
	return &capgotest.Device{
		Dir: dir,
		Info: capgo.Info{
			Platform: "android", DeviceID: capgo.Str("slowlink-" + filepath.Base(filepath.Dir(dir)) + "-" + filepath.Base(dir)),
			AppID: capgo.Str(s.cfg.App), VersionBuild: capgo.Str(native), VersionCode: "1", VersionOS: "14",
			VersionName: capgo.Builtin, PluginVersion: capgoPluginVersion, IsProd: true,
			DefaultChannel: capgo.Str(s.cfg.Channel),
		},
	}
}

// capgoUpdate checks with the Capgo plugin's request at edge and installs
// the answer, which must be version want. A positive wait retries while
// the edge has no bundle yet (the origin still building it).
func (s *SlowLink) capgoUpdate(ctx context.Context, d *capgotest.Device, edge, want string, wait time.Duration) (LinkRun, error) {
	d.UpdateURL, d.StatsURL, d.ChannelURL = edge+"/updates", edge+"/stats", edge+"/channel_self"
	// A fresh client per run: new connections, as on a phone that wakes.
	ct := &gzipCounting{base: &http.Transport{MaxIdleConnsPerHost: 64}}
	d.HTTP = &http.Client{Transport: ct, Timeout: s.cfg.Wait}
	deadline := time.Now().Add(wait)
	for {
		a, raw, err := d.Check(ctx)
		if err != nil {
			return LinkRun{}, fmt.Errorf("capgo check: %w", err)
		}
		if !a.IsUpdate() {
			if code := deref(a.Error); code == capgo.CodeNoBundle && time.Now().Before(deadline) {
				select {
				case <-ctx.Done():
					return LinkRun{}, ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			return LinkRun{}, fmt.Errorf("capgo check: no update: %.300s", raw)
		}
		if v := deref(a.Version); v != want {
			return LinkRun{}, fmt.Errorf("capgo check offers %s, want %s", v, want)
		}
		for _, e := range a.Manifest {
			if u := deref(e.DownloadURL); !strings.HasPrefix(u, edge+"/") {
				return LinkRun{}, fmt.Errorf("capgo answer points at %s, not at %s: the edge has a fixed --capgo-public-url, which would bypass the simulated link", u, edge)
			}
		}
		r, err := d.Install(ctx, a)
		if err != nil {
			return LinkRun{}, fmt.Errorf("capgo install: %w", err)
		}
		return LinkRun{Bytes: ct.n.Load(), Mode: r.Mode, Files: r.Downloaded}, nil
	}
}

// gzipCounting is the plugin's HTTP stack as far as bytes go: it asks for
// gzip, as OkHttp and URLSession do, and hands the client decoded bodies,
// while counting the body bytes as they came over the network (Go's own
// transparent gzip would hide them). Only the last check's answer and the
// install that follows count: n is reset by each update check.
type gzipCounting struct {
	base http.RoundTripper
	n    atomic.Int64
}

func (g *gzipCounting) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/updates") {
		g.n.Store(0)
	}
	req = req.Clone(req.Context())
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := g.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body := io.Reader(countingReader{resp.Body, &g.n})
	switch enc := strings.ToLower(resp.Header.Get("Content-Encoding")); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("bench: gzip answer from %s: %w", req.URL, err)
		}
		body = zr
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("bench: %s answered in %q, which a Capgo plugin did not ask for", req.URL, enc)
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{body, resp.Body}
	return resp, nil
}

// countingReader adds the bytes read to n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteJSON writes r as one indented JSON object.
func (r *SlowLinkResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("bench: write JSON: %w", err)
	}
	return nil
}

// WriteText writes one line per pair: both update times, the bytes on the
// wire and the ratio.
func (r *SlowLinkResult) WriteText(w io.Writer) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "capstan bench: slow-link scenario, %s/%s via %s; link %.2f Mbit/s down, %.2f Mbit/s up, %.0f ms round trip\n\n",
		r.App, r.Channel, r.Edge, float64(r.DownBPS)/1e6, float64(r.UpBPS)/1e6, r.RTTMS)
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pair\tCapstan s\twire bytes\tmode\tfile level s\twire bytes\tfiles\tCapstan/files\t")
	for _, p := range r.Pairs {
		fmt.Fprintf(tw, "%s → %s\t%.2f\t%s\t%s\t%.2f\t%s\t%d\t%.2f×\t\n", p.From, p.To,
			p.Capstan.Seconds, humanize.Comma(p.Capstan.WireDown+p.Capstan.WireUp), p.Capstan.Mode,
			p.Files.Seconds, humanize.Comma(p.Files.WireDown+p.Files.WireUp), p.Files.Files, p.TimeRatio)
	}
	tw.Flush()
	sb.WriteString("(Capstan: the reference device, check + download + verify + install; file level: a Capgo plugin in manifest mode,\n" +
		"update answer + each missing file, Brotli from 8 KiB, 8 at a time; wire bytes both ways, HTTP headers included)\n")
	_, err := io.WriteString(w, sb.String())
	return err
}
