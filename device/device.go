package device

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdh"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
	"github.com/capstan-ota/capstan/wire"
)

// Config configures a device. Zero values mean the documented defaults.
type Config struct {
	// Dir holds the installed bundle (Dir/current) and the device's state
	// (Dir/.capstan).
	Dir string
	// Edges are the base URLs the app ships. With ranking on (the
	// default) they are where the device learns the fleet, and the last
	// resort after the ranked edges; with Ranking.Off they are tried in
	// order.
	Edges []string
	// Ranking says how the device finds its nearest edge (see RankConfig).
	Ranking RankConfig
	// App and Channel say what to follow.
	App, Channel string
	// DeviceID overrides the stored (or generated) device id.
	DeviceID string
	// NativeVersion is the version of the native app shell.
	NativeVersion string
	// Keys are the trusted public keys (release and origin roles), pinned
	// in the device's state on first use. A run without keys keeps the
	// pinned ones; a device with none at all checks no signature
	// (development only: capstan device refuses it without
	// --insecure-no-verify).
	Keys []release.PublicKey
	// DecryptKey is the app's X25519 private key, needed for the releases
	// of an app that encrypts them (see seal.go); nil for none.
	DecryptKey *ecdh.PrivateKey
	// RequestTimeout bounds one request to an edge (default 10 s); a slow
	// or silent edge costs at most this before the next edge is tried.
	RequestTimeout time.Duration
	// MaxDownload bounds the bytes of one download (default 1 GiB).
	MaxDownload int64
	// Parallel is the number of concurrent file downloads (default 8).
	Parallel int
	// BuiltinDir is the bundle shipped inside the app. A device with an
	// empty Dir/current starts from a copy of it, and going back to the
	// built-in bundle (a rollback to builtin, or reverting the first
	// update) copies it into Dir/current. Empty means the app ships no
	// web bundle of its own: Dir/current is then left empty.
	BuiltinDir string
	// ConfirmTimeout is how long a newly installed release may stay
	// unconfirmed (see Device.Confirm) before the next run reverts it
	// (default 10 minutes; negative: never revert).
	ConfirmTimeout time.Duration
	// NoEvents stops the device from reporting events (check, download,
	// install, confirm, fail, revert) to the edge; benchmarks use it.
	NoEvents bool
	// HTTPClient is used for every request; nil means a client with sane
	// connect and header timeouts.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Status values of a Result.
const (
	StatusUpdated  = "updated"
	StatusUpToDate = "up-to-date"
	StatusAvail    = "available"
	StatusFailed   = "failed"
	// StatusConfirmed: Confirm marked the current release healthy.
	StatusConfirmed = "confirmed"
	// StatusReverted: the run reverted an unconfirmed release and
	// installed nothing else.
	StatusReverted = "reverted"
)

// Result is what one run did; it is printed by `capstan device --json`.
type Result struct {
	Status string `json:"status"`
	From   string `json:"from"`
	To     string `json:"to"`
	Mode   string `json:"mode,omitempty"`
	// Bytes counts every byte the device downloaded.
	Bytes int64  `json:"bytes"`
	MS    int64  `json:"ms"`
	Error string `json:"error,omitempty"`
	// Reason explains an up-to-date answer that is really a block.
	Reason string `json:"reason,omitempty"`
	Edge   string `json:"edge,omitempty"`
	// Code names the rule behind Reason (release.Block…), when one applies.
	Code string `json:"code,omitempty"`
	// Reverted is the version this run reverted because it was not
	// confirmed in time.
	Reverted string `json:"reverted,omitempty"`
	// InsecureNoVerify says the run checked no signature: the device
	// trusts no key (capstan device --insecure-no-verify).
	InsecureNoVerify bool `json:"insecure_no_verify,omitempty"`
}

// Errors a run can fail with; callers branch with errors.Is.
var (
	ErrVerify  = errors.New("device: verification failed")
	ErrReplay  = errors.New("device: channel record is older than one already seen (replay)")
	ErrExpired = errors.New("device: channel record has expired (the edge may be freezing this device)")
	ErrNoEdge  = errors.New("device: no edge answered")
	// ErrRefused: an edge answered with an HTTP error (it did answer:
	// not ErrNoEdge).
	ErrRefused     = errors.New("device: the edge refused")
	ErrWrongRecord = errors.New("device: record is for another app or channel")
	// ErrOtherApp: the folder belongs to another app (State.App).
	ErrOtherApp = errors.New("device: the folder belongs to another app")
)

// Device is one simulated device. It is not safe for concurrent use; run
// one operation at a time.
type Device struct {
	cfg   Config
	st    *State
	bytes atomic.Int64
	rank  ranker
	// outbox holds events not yet taken by an edge (see events.go).
	outbox []stats.Event
	// saved is the state as last written (or read): an unchanged state is
	// not written again.
	saved []byte
	// trash holds folders (outgoing bundles) to delete once the update's
	// result is known; named staging-…, so a run that dies first leaves
	// them to cleanStaging.
	trash []string
}

// New opens the device's folder, recovering from an interrupted install.
func New(cfg Config) (*Device, error) {
	if cfg.Dir == "" {
		return nil, errors.New("device: Dir is required")
	}
	if len(cfg.Edges) == 0 {
		return nil, errors.New("device: at least one edge URL is required")
	}
	if err := release.ValidateApp(cfg.App); err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	if cfg.Channel != "" {
		if err := release.ValidateChannel(cfg.Channel); err != nil {
			return nil, fmt.Errorf("device: %w", err)
		}
	}
	if cfg.ConfirmTimeout == 0 {
		cfg.ConfirmTimeout = DefaultConfirmTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.MaxDownload <= 0 {
		cfg.MaxDownload = 1 << 30
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 8
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
			ResponseHeaderTimeout: cfg.RequestTimeout,
			MaxIdleConnsPerHost:   cfg.Parallel,
		}}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	st, raw, err := loadState(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if st.App != "" && st.App != cfg.App {
		return nil, fmt.Errorf("%w: %s holds app %s, not %s: give each app its own folder (--dir), or delete %s to start over",
			ErrOtherApp, cfg.Dir, st.App, cfg.App, cfg.Dir)
	}
	// A folder made before State.App existed belongs to the first app
	// run on it from now on.
	st.App = cfg.App
	d := &Device{cfg: cfg, st: st, outbox: loadOutbox(cfg.Dir), saved: raw}
	d.pinKeys()
	if cfg.DeviceID != "" {
		st.DeviceID = cfg.DeviceID
	}
	if st.DeviceID == "" {
		st.DeviceID = newDeviceID()
	}
	if err := d.recover(); err != nil {
		return nil, err
	}
	if err := d.seedBuiltin(); err != nil {
		return nil, err
	}
	if err := d.save(); err != nil {
		return nil, err
	}
	return d, nil
}

// save writes the state durably, unless it is what the folder holds
// already.
func (d *Device) save() error {
	b, err := encodeState(d.st)
	if err != nil {
		return err
	}
	if bytes.Equal(b, d.saved) {
		return nil
	}
	if err := writeState(d.cfg.Dir, b, true); err != nil {
		return err
	}
	d.saved = b
	return nil
}

// emptyTrash deletes the outgoing bundles of this run.
func (d *Device) emptyTrash() {
	for _, t := range d.trash {
		os.RemoveAll(t)
	}
	d.trash = nil
}

// State returns a copy of the device's state.
func (d *Device) State() State { return *d.st }

// recover finishes or undoes an install that a crash interrupted.
func (d *Device) recover() error {
	cleanStaging(d.cfg.Dir)
	if d.st.Installing == nil {
		return nil
	}
	if d.st.Reverting {
		d.recoverRevert()
		return nil
	}
	if d.st.InstallingManifest != nil {
		if m, err := d.manifestOf(d.st.InstallingManifest); err == nil && verifyTree(currentDir(d.cfg.Dir), m) == nil {
			d.commitInstalled(*d.st.Installing, d.st.InstallingManifest)
		}
	}
	d.st.Installing, d.st.InstallingManifest = nil, nil
	return nil
}

func (d *Device) commitInstalled(to release.Ref, env *release.Envelope) {
	// While Current is pending, Previous stays the last confirmed release.
	if d.st.Current.ID != to.ID && !d.st.Pending {
		prev := d.st.Current
		d.st.Previous = &prev
		d.st.PreviousManifest = d.st.Manifest
	}
	d.st.Current = to
	d.st.Manifest = env
}

// plan is a verified answer: what to install, if anything.
type plan struct {
	edge    string
	channel *release.Channel
	target  release.Ref
	// doc is the verified release document of target (nil: nothing to
	// download, or the built-in bundle); env its signed envelope.
	doc *release.Doc
	env *release.Envelope
	// manifest is target's full file list, once known: at once for a
	// format 1 release, else after the patch made it (or the file list
	// was downloaded for a file-by-file install).
	manifest *release.Manifest
	reason   string
	code     string
}

// Check asks the edges whether an update is available, verifying the
// answer, and installs nothing.
func (d *Device) Check(ctx context.Context) Result {
	start := d.cfg.Now()
	res := Result{From: d.st.Current.Version}
	p, err := d.check(ctx)
	res = d.finish(res, start, p, err)
	if err == nil && res.Status == StatusUpdated {
		res.Status = StatusAvail
	}
	d.flushEvents(ctx, p)
	return res
}

// Update checks, downloads, verifies and installs an update if there is one.
func (d *Device) Update(ctx context.Context) Result {
	start := d.cfg.Now()
	res := Result{From: d.st.Current.Version}
	reverted, err := d.revertIfDue(ctx)
	if err != nil {
		res.Status, res.Error = StatusFailed, err.Error()
		res.MS = d.cfg.Now().Sub(start).Milliseconds()
		d.flushEvents(ctx, nil)
		return res
	}
	p, err := d.check(ctx)
	if err == nil && p.reason == "" && p.target.ID != d.st.Current.ID {
		res.Mode, err = d.install(ctx, p)
		d.recordInstall(p, err)
	}
	res = d.finish(res, start, p, err)
	// The outgoing bundle goes once the result is known: deleting a few
	// hundred files is no part of the update.
	d.emptyTrash()
	if reverted != "" {
		res.Reverted = reverted
		if res.Status == StatusUpToDate {
			res.Status = StatusReverted
		}
	}
	d.flushEvents(ctx, p)
	return res
}

func (d *Device) finish(res Result, start time.Time, p *plan, err error) Result {
	res.Bytes = d.bytes.Swap(0)
	res.MS = d.cfg.Now().Sub(start).Milliseconds()
	if p != nil {
		res.Edge = p.edge
		res.Code = p.code
	}
	switch {
	case err != nil:
		res.Status = StatusFailed
		res.Error = err.Error()
		if p != nil {
			res.To = p.target.Version
		}
	case p.target.ID == d.st.Current.ID && res.Mode == "" || p.reason != "":
		res.Status = StatusUpToDate
		res.To = d.st.Current.Version
		res.Reason = p.reason
	default:
		res.Status = StatusUpdated
		res.To = p.target.Version
	}
	if err := d.save(); err != nil {
		if res.Error == "" {
			res.Status, res.Error = StatusFailed, err.Error()
		}
	} else {
		d.pruneLists()
	}
	return res
}

// check asks each edge in turn until one gives an answer that verifies.
func (d *Device) check(ctx context.Context) (*plan, error) {
	q := url.Values{}
	q.Set("app", d.cfg.App)
	if d.cfg.Channel != "" {
		q.Set("channel", d.cfg.Channel)
	}
	q.Set("device", d.st.DeviceID)
	if !d.st.Current.ID.IsZero() {
		q.Set("current", d.st.Current.ID.String())
		q.Set("version", d.st.Current.Version)
	}
	if f := recentFailed(d.st.Failed); f != "" {
		q.Set("failed", f)
	}
	if d.cfg.NativeVersion != "" {
		q.Set("native", d.cfg.NativeVersion)
	}
	var errs []error
	answered := false // some edge answered: its error is the reason, not "no edge"
	edges := d.edgeOrder(ctx)
	for i, edge := range edges {
		var ans wire.CheckAnswer
		if err := d.getJSON(ctx, edge, "/v1/check?"+q.Encode(), wire.MaxCheckAnswerBytes+release.MaxManifestBytes, &ans); err != nil {
			var unreachable *url.Error // the request got no answer at all
			answered = answered || !errors.As(err, &unreachable)
			errs = append(errs, err)
			continue
		}
		p, err := d.verify(edge, &ans)
		if err != nil && errors.Is(err, release.ErrUnsigned) && d.followRotations(ctx, edge) {
			// The answer is signed by a key the device does not know yet:
			// it followed the edge's rotation statements; try again.
			p, err = d.verify(edge, &ans)
		}
		if err != nil {
			// A bad answer from one edge is that edge's fault: try the next.
			answered = true
			errs = append(errs, fmt.Errorf("%s: %w", edge, err))
			continue
		}
		d.st.Channel = p.channel.Channel
		d.record(stats.ActionCheck, d.st.Current, 0, "")
		d.served(edges, i)
		return p, nil
	}
	if answered {
		return nil, errors.Join(errs...)
	}
	return nil, errors.Join(append([]error{ErrNoEdge}, errs...)...)
}

// verify checks a check answer against the trusted keys and the device's
// own memory (AnswerCheck), and decides what to install.
func (d *Device) verify(edge string, ans *wire.CheckAnswer) (*plan, error) {
	c := &AnswerCheck{Keys: d.st.Keys, App: d.cfg.App, Channel: d.cfg.Channel, DeviceID: d.st.DeviceID,
		Current: d.st.Current, Native: d.cfg.NativeVersion, Failed: d.st.Failed, Seen: d.st.Seqs, Now: d.cfg.Now()}
	v, err := c.VerifyRecord(ans)
	if err != nil {
		return nil, err
	}
	if d.st.Seqs == nil {
		d.st.Seqs = map[string]uint64{}
	}
	d.st.Seqs[v.Channel.Key()] = v.Channel.Seq
	if v.NeedsRelease(d.st.Current) {
		if err := c.VerifyRelease(v, ans); err != nil {
			return nil, err
		}
	}
	return &plan{edge: edge, channel: v.Channel, target: v.Target, doc: v.Doc, env: v.Release, manifest: v.Manifest,
		reason: v.Reason, code: v.Code}, nil
}

// install downloads and installs p's release and returns the mode used.
func (d *Device) install(ctx context.Context, p *plan) (string, error) {
	staging, err := newStaging(d.cfg.Dir)
	if err != nil {
		return "", fmt.Errorf("device: %w", err)
	}
	swapped := false
	defer func() {
		if !swapped {
			os.RemoveAll(staging)
		}
	}()
	mode := "builtin"
	if p.doc != nil {
		mode, err = d.populate(ctx, p, staging)
		if err != nil {
			return mode, err
		}
		// The list the install just verified is what the next update
		// starts from; it is durable before the state names it.
		if _, err := saveList(d.cfg.Dir, p.manifest.Files); err != nil {
			return mode, err
		}
	} else if err := d.fillBuiltin(staging); err != nil {
		return mode, err
	}
	// Record the intent before the swap, so a crash right after it is
	// recognised on the next run. One syncfs then makes the staging tree,
	// the file list and this state durable together, before the swap: the
	// state's bytes are synced on their own (never torn), its rename rides
	// on the syncfs.
	d.st.Installing, d.st.InstallingManifest = &p.target, p.env
	b, err := encodeState(d.st)
	if err == nil {
		err = writeState(d.cfg.Dir, b, false)
	}
	if err != nil {
		return mode, err
	}
	d.saved = b
	if err := syncTree(staging); err != nil {
		d.st.Installing, d.st.InstallingManifest = nil, nil
		return mode, fmt.Errorf("device: %w", err)
	}
	if err := d.swapKeepingPrevious(staging); err != nil {
		return mode, err
	}
	swapped = true
	d.commitInstalled(p.target, p.env)
	d.st.Installing, d.st.InstallingManifest = nil, nil
	d.markPending(p.target)
	// One sync of the state folder makes both the kept previous bundle's
	// new name and the committed state durable.
	return mode, d.save()
}

// targetFiles makes sure p.manifest holds the target's full file list,
// downloading the list a format 2 release names by hash (a blob like any
// other, checked against the signed hash) when no patch has produced it.
func (d *Device) targetFiles(ctx context.Context, p *plan) error {
	if p.manifest != nil {
		return nil
	}
	want := p.doc.Files.SHA256
	var errs []error
	for _, e := range uniq(append([]string{p.edge}, d.order()...)) {
		var body []byte
		err := d.download(ctx, e, "/v1/blobs/"+want.String(), p.doc.Files.MaxListBytes(), func(r io.Reader) error {
			var rerr error
			body, rerr = io.ReadAll(r)
			return rerr
		})
		if err == nil && release.Sum(body) != want {
			err = fmt.Errorf("%w: file list from %s does not match the signed release document", ErrVerify, e)
		}
		var files []release.File
		if err == nil {
			if files, err = release.DecodeFileList(body); err != nil {
				err = fmt.Errorf("%w: %w", ErrVerify, err)
			}
		}
		if err == nil {
			m, err := p.doc.WithFiles(files)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrVerify, err)
			}
			p.manifest = m
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("device: file list of %s: %w", p.target.Version, errors.Join(errs...))
}

// populateFiles fills staging with every file of the target, reusing files
// the installed bundle already has and downloading the rest one by one.
func (d *Device) populateFiles(ctx context.Context, p *plan, staging string) error {
	if err := d.targetFiles(ctx, p); err != nil {
		return err
	}
	have := map[release.Hash]string{}
	if d.st.Manifest != nil {
		if cur, err := d.manifestOf(d.st.Manifest); err == nil {
			for _, f := range cur.Files {
				have[f.SHA256] = f.Path
			}
		}
	}
	sp, err := d.openSealed(ctx, p)
	if err != nil {
		return err
	}
	// Parallel downloads at a time; the first failure cancels the others
	// and is the one reported.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(d.cfg.Parallel)
	for _, f := range p.manifest.Files {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return d.placeFile(gctx, p.edge, staging, f, have, sp) })
	}
	return g.Wait()
}

func (d *Device) placeFile(ctx context.Context, edge, staging string, f release.File, have map[release.Hash]string, sp *sealedPlan) error {
	if src, ok := have[f.SHA256]; ok {
		if p, err := safeJoin(currentDir(d.cfg.Dir), src); err == nil {
			if r, err := os.Open(p); err == nil {
				err = writeFile(staging, f, r)
				r.Close()
				if err == nil {
					return nil
				}
				// The local copy is damaged: fall through to a download.
				os.Remove(filepath.Join(staging, filepath.FromSlash(f.Path)))
			}
		}
	}
	edges := append([]string{edge}, d.order()...)
	var errs []error
	for _, e := range uniq(edges) {
		err := d.fetchFile(ctx, e, staging, f, sp)
		if err == nil {
			return nil
		}
		os.Remove(filepath.Join(staging, filepath.FromSlash(f.Path)))
		errs = append(errs, err)
	}
	return fmt.Errorf("device: download %s: %w", f.Path, errors.Join(errs...))
}

func uniq(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// countingReader counts bytes into the device's download total.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// download GETs path from edge and hands the body, bounded to limit bytes,
// to consume. The whole exchange has a deadline scaled to the size, so a
// trickling edge is abandoned.
func (d *Device) download(ctx context.Context, edge, path string, limit int64, consume func(io.Reader) error) error {
	return d.fetch(ctx, edge, path, limit, "", func(_ http.Header, r io.Reader) error { return consume(r) })
}

// fetch is download with an Accept-Encoding header (accept; "" sends
// none, so the answer comes as stored) and the answer's headers.
func (d *Device) fetch(ctx context.Context, edge, path string, limit int64, accept string, consume func(http.Header, io.Reader) error) error {
	// 1 MB/s floor on top of the base timeout.
	timeout := d.cfg.RequestTimeout + time.Duration(limit/(1<<20))*time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(edge, "/")+path, nil)
	if err != nil {
		return err
	}
	// Setting the header ourselves also stops Go's transport from asking
	// for gzip and decoding it out of sight, so Bytes counts what crossed
	// the network.
	if accept == "" {
		accept = "identity"
	}
	req.Header.Set("Accept-Encoding", accept)
	resp, err := d.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		d.bytes.Add(int64(len(b)))
		msg := strings.TrimSpace(string(b))
		var e wire.Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return fmt.Errorf("%w: %s%s: %s: %s", ErrRefused, edge, path, resp.Status, msg)
	}
	if resp.ContentLength > limit {
		return fmt.Errorf("%s%s: %d bytes is more than the %d expected", edge, path, resp.ContentLength, limit)
	}
	return consume(resp.Header, countingReader{io.LimitReader(resp.Body, limit), &d.bytes})
}

// jsonEncodings are the compressions the device accepts on JSON answers
// (an update answer is over 1 KB, so edges compress it).
const jsonEncodings = "zstd, br, gzip"

func (d *Device) getJSON(ctx context.Context, edge, path string, limit int64, v any) error {
	var body []byte
	err := d.fetch(ctx, edge, path, limit, jsonEncodings, func(h http.Header, r io.Reader) error {
		dec, err := decoder(h.Get("Content-Encoding"), r)
		if err != nil {
			return err
		}
		defer dec.Close()
		// The decoded answer is bounded like the wire bytes.
		body, err = io.ReadAll(io.LimitReader(dec, limit+1))
		if err == nil && int64(len(body)) > limit {
			err = fmt.Errorf("answer is over %d bytes once decoded", limit)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: malformed answer: %w", edge, err)
	}
	return nil
}

// decoder undoes a Content-Encoding the device asked for.
func decoder(enc string, r io.Reader) (io.ReadCloser, error) {
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "", "identity":
		return io.NopCloser(r), nil
	case "gzip":
		return gzip.NewReader(r)
	case "br":
		return io.NopCloser(brotli.NewReader(r)), nil
	case "zstd":
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(8<<20))
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("answer in an encoding the device did not ask for: %q", enc)
}
