package bench

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-ota/capstan/delta"
	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"golang.org/x/sync/errgroup"
)

// relInfo is one release as devices know it. It is shared read-only by
// every device that runs it.
type relInfo struct {
	ref      release.Ref
	doc      *release.Doc
	manifest *release.Manifest
	// files maps each content hash of the release to its size.
	files map[release.Hash]int64
}

// newRelInfo describes a verified release. A format 2 release signs only a
// document naming its file list by hash; the simulated fleet needs the
// list (to download file by file, and to know what a device holds), so it
// is fetched once per release from the edges, checked against that hash,
// and shared by every simulated device: a real device learns it from the
// patch it applies.
func (b *Bench) newRelInfo(ctx context.Context, env *release.Envelope) (*relInfo, error) {
	doc, m, err := env.Release()
	if err != nil {
		return nil, err
	}
	if m == nil {
		if m, err = b.fetchFileList(ctx, doc); err != nil {
			return nil, err
		}
	}
	ri := &relInfo{ref: release.Ref{Version: doc.Version, ID: env.ID()}, doc: doc, manifest: m, files: make(map[release.Hash]int64, len(m.Files))}
	for _, f := range m.Files {
		ri.files[f.SHA256] = f.Size
	}
	return ri, nil
}

// fetchFileList downloads and checks the file list a release document
// names.
func (b *Bench) fetchFileList(ctx context.Context, doc *release.Doc) (*release.Manifest, error) {
	var errs []error
	for _, edge := range b.cfg.Edges {
		var m *release.Manifest
		_, err := get(ctx, b.http, edge+"/v1/blobs/"+doc.Files.SHA256.String(), b.cfg.Timeout, func(r *response) error {
			if int64(len(r.Body)) > doc.Files.MaxListBytes() || release.Sum(r.Body) != doc.Files.SHA256 {
				return fmt.Errorf("%w: file list does not match its hash", ErrVerify)
			}
			files, err := release.DecodeFileList(r.Body)
			if err != nil {
				return err
			}
			m, err = doc.WithFiles(files)
			return err
		})
		if err == nil {
			return m, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", edge, err))
	}
	return nil, fmt.Errorf("bench: file list of %s %s: %w", doc.App, doc.Version, errors.Join(errs...))
}

func (r *relInfo) id() release.Hash {
	if r == nil {
		return release.ZeroHash
	}
	return r.ref.ID
}

// reference is the release r names; the zero Ref for the builtin bundle.
func (r *relInfo) reference() release.Ref {
	if r == nil {
		return release.Ref{}
	}
	return r.ref
}

func (r *relInfo) version() string {
	if r == nil {
		return "builtin"
	}
	return r.ref.Version
}

// simDevice is one simulated device, in memory only.
type simDevice struct {
	id string

	mu    sync.Mutex // held for a whole session; guards the fields below
	order []int      // edge indexes, preferred first
	cur   *relInfo   // installed release; nil is the builtin bundle
	start *relInfo   // release the device started the run on
	seq   uint64     // highest channel record sequence seen
}

// outcome is what one session did.
type outcome int

const (
	outUpToDate outcome = iota
	outBlocked
	outUpdated
	outCheckFailed
	outUpdateFailed
)

// session is one wake-up of device d: check, and when offered, download,
// verify and install, then report. Latency of the check and the whole
// update are measured from intended.
func (b *Bench) session(ctx context.Context, d *simDevice, intended time.Time) outcome {
	d.mu.Lock()
	defer d.mu.Unlock()
	b.rec.Record("start_lag", "", time.Now(), time.Since(intended), 0)
	target, ei, blocked, err := b.check(ctx, d, intended)
	if err != nil {
		return outCheckFailed
	}
	if blocked {
		return outBlocked
	}
	if target == nil || target.id() == d.cur.id() {
		return outUpToDate
	}
	from := d.cur
	dlStart := time.Now()
	n, edge, mode, err := b.download(ctx, d, ei, from, target)
	end := time.Now()
	if err != nil {
		b.rec.Error("update", b.cfg.Edges[ei], errKind(err), end)
		b.cfg.Logger.Debug("update failed", "device", d.id, "err", err)
		b.report(ctx, d, target, n, err)
		return outUpdateFailed
	}
	b.rec.Record("download", edge, end, end.Sub(dlStart), n)
	b.rec.Record("update", edge, end, end.Sub(intended), 0)
	b.rec.Record("update_"+mode, "", end, end.Sub(intended), n)
	b.install(d, target)
	b.report(ctx, d, target, n, nil)
	if b.recycle {
		// A new device on the old release takes this one's place.
		b.install(d, d.start)
	}
	return outUpdated
}

// install moves d to r and keeps the per-release population counts.
func (b *Bench) install(d *simDevice, r *relInfo) {
	b.popMu.Lock()
	b.pop[d.cur.id()]--
	b.pop[r.id()]++
	if !b.newest.IsZero() && r.id() == b.newest {
		// Crossings are taken here, at the install that crosses, rather
		// than by sampling, so the storm figures are exact.
		share := float64(b.pop[b.newest]) / float64(len(b.devices))
		now := time.Now()
		if share >= 0.5 && b.t50.IsZero() {
			b.t50 = now
		}
		if share >= 0.99 && b.t99.IsZero() {
			b.t99 = now
		}
	}
	b.popMu.Unlock()
	d.cur = r
}

// check asks d's edges in order until one answers with a record that
// verifies. It returns the release to install (nil for none), the index of
// the edge that answered, and whether the answer was "blocked".
func (b *Bench) check(ctx context.Context, d *simDevice, intended time.Time) (*relInfo, int, bool, error) {
	q := url.Values{}
	q.Set("app", b.cfg.App)
	q.Set("channel", b.cfg.Channel)
	q.Set("device", d.id)
	if d.cur != nil {
		q.Set("current", d.cur.ref.ID.String())
	}
	if b.cfg.NativeVersion != "" {
		q.Set("native", b.cfg.NativeVersion)
	}
	path := "/v1/check?" + q.Encode()
	var errs []error
	for attempt := 0; attempt < len(d.order); attempt++ {
		if ctx.Err() != nil {
			break
		}
		ei := d.order[0]
		edge := b.cfg.Edges[ei]
		var target *relInfo
		var blocked bool
		n, err := get(ctx, b.http, edge+path, b.cfg.Timeout, func(r *response) error {
			var ans wire.CheckAnswer
			if err := json.Unmarshal(r.Body, &ans); err != nil {
				return fmt.Errorf("bench: decode check answer: %w", err)
			}
			var err error
			target, blocked, err = b.verifyAnswer(ctx, d, &ans)
			return err
		})
		b.bytes.Add(n)
		end := time.Now()
		if err == nil {
			b.rec.Record("check", edge, end, end.Sub(intended), n)
			return target, ei, blocked, nil
		}
		b.rec.Error("check", edge, errKind(err), end)
		errs = append(errs, fmt.Errorf("%s: %w", edge, err))
		if len(d.order) > 1 {
			// The device moves a failing edge to the back of its list and
			// tries the next one, now and in later sessions.
			d.order = append(d.order[1:], ei)
			b.failovers.Add(1)
		}
	}
	b.rec.Error("session", "", "no_edge", time.Now())
	return nil, 0, false, errors.Join(append([]error{ErrNoEdge}, errs...)...)
}

// verifyAnswer checks a check answer by the reference device's rules
// (device.AnswerCheck) and returns the release to install (nil for none)
// and whether an offered release was refused.
func (b *Bench) verifyAnswer(ctx context.Context, d *simDevice, ans *wire.CheckAnswer) (*relInfo, bool, error) {
	c := device.AnswerCheck{Keys: b.cfg.Keys, App: b.cfg.App, Channel: b.cfg.Channel, DeviceID: d.id,
		Current: d.cur.reference(), Native: b.cfg.NativeVersion, Now: time.Now()}
	if d.seq > 0 {
		c.Seen = map[string]uint64{b.cfg.App + "/" + b.cfg.Channel: d.seq}
	}
	v, err := c.VerifyRecord(ans)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	d.seq = v.Channel.Seq
	if !v.NeedsRelease(c.Current) {
		return nil, v.Code != "", nil
	}
	var ri *relInfo
	if ans.Release != nil {
		if ri = b.knownRelease(ans.Release.ID()); ri != nil {
			// Same ID means the same signed bytes: verified once,
			// trusted again (the policy is still judged per device).
			c.Keys = nil
		}
	}
	if err := c.VerifyRelease(v, ans); err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	if v.Code != "" {
		return nil, true, nil
	}
	if ri == nil {
		if ri, err = b.newRelInfo(ctx, ans.Release); err != nil {
			return nil, false, fmt.Errorf("%w: release: %v", ErrVerify, err)
		}
		ri = b.addRelease(ri)
	}
	return ri, false, nil
}

// releaseFromEnvelope returns the shared relInfo of a signed release
// after checking it is the release t (device.VerifyDocument).
func (b *Bench) releaseFromEnvelope(ctx context.Context, env *release.Envelope, t release.Ref) (*relInfo, error) {
	if ri := b.knownRelease(env.ID()); ri != nil && env.ID() == t.ID {
		// Same ID means the same signed bytes: verified once, trusted again.
		return ri, nil
	}
	if _, _, err := device.VerifyDocument(env, t, b.cfg.App, b.cfg.Keys); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	ri, err := b.newRelInfo(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("%w: release: %v", ErrVerify, err)
	}
	return b.addRelease(ri), nil
}

// download fetches what d needs to go from base to target, starting at
// edge ei, and verifies it. It returns the bytes received, the edge that
// served the last object and the mode used ("patch" or "files").
func (b *Bench) download(ctx context.Context, d *simDevice, ei int, base, target *relInfo) (int64, string, string, error) {
	order := rotateTo(d.order, ei)
	if b.cfg.Mode != ModeFiles && !b.noPatch(base.id(), target.id()) {
		n, edge, err := b.fetchPatch(ctx, order, base, target)
		switch {
		case err == nil:
			return n, edge, "patch", nil
		case b.cfg.Mode == ModePatch:
			return n, edge, "patch", err
		case errors.Is(err, ErrNoPatch):
			b.markNoPatch(base.id(), target.id())
		default:
			// A patch that fails is followed by the files, as on a real
			// device; the bytes spent on the patch still count, and the
			// patch errors are counted by fetchPatch.
			b.fallbacks.Add(1)
		}
		m, edge, err := b.fetchFiles(ctx, order, base, target)
		return n + m, edge, "files", err
	}
	n, edge, err := b.fetchFiles(ctx, order, base, target)
	return n, edge, "files", err
}

// rotateTo returns order starting at edge index ei.
func rotateTo(order []int, ei int) []int {
	for i, e := range order {
		if e == ei {
			return append(append([]int(nil), order[i:]...), order[:i]...)
		}
	}
	return append([]int(nil), order...)
}

// fetchPatch downloads the one patch from base to target. Applying it is
// skipped (it costs device CPU, not server capacity); the bytes are checked
// against their content address (a Capstan edge's ETag is the SHA-256 of
// the stream) and the header must name exactly this base and target.
func (b *Bench) fetchPatch(ctx context.Context, order []int, base, target *relInfo) (int64, string, error) {
	path := "/v1/patches/" + base.id().String() + "/" + target.id().String()
	var total int64
	var errs []error
	for _, ei := range order {
		if ctx.Err() != nil {
			break
		}
		edge := b.cfg.Edges[ei]
		n, err := get(ctx, b.http, edge+path, b.patchTimeout(target), func(r *response) error {
			return verifyPatch(r.Body, r.ETag, base.id(), target)
		})
		total += n
		b.bytes.Add(n)
		var se *statusError
		if errors.As(err, &se) && se.code == 404 {
			return total, edge, fmt.Errorf("%w: %s", ErrNoPatch, edge)
		}
		if err == nil {
			b.patchBytes.Add(n)
			return total, edge, nil
		}
		b.rec.Error("patch", edge, errKind(err), time.Now())
		errs = append(errs, fmt.Errorf("%s: %w", edge, err))
	}
	return total, "", fmt.Errorf("bench: patch %s: %w", path, errors.Join(errs...))
}

func verifyPatch(body []byte, etag string, base release.Hash, target *relInfo) error {
	if err := delta.CheckHeader(body, base, target.id()); err != nil {
		return fmt.Errorf("%w: %v", ErrVerify, err)
	}
	// A Capstan edge names a patch by its SHA-256; a plain file server's
	// ETag (mtime-size) is no content address and is not checked.
	if _, err := release.ParseHash(etag); err == nil && release.Hash(sha256.Sum256(body)).String() != etag {
		return fmt.Errorf("%w: patch bytes do not match their content address", ErrVerify)
	}
	return nil
}

// patchTimeout scales the request timeout by the size of the release, at
// a 1 MB/s floor, like device.download does.
func (b *Bench) patchTimeout(target *relInfo) time.Duration {
	return b.cfg.Timeout + time.Duration(target.manifest.TotalSize()>>20)*time.Second
}

// fetchFiles downloads every file of target whose content base lacks, by
// hash, Parallel at a time, each verified against the signed manifest's
// size and SHA-256.
func (b *Bench) fetchFiles(ctx context.Context, order []int, base, target *relInfo) (int64, string, error) {
	var need []release.File
	seen := map[release.Hash]bool{}
	for _, f := range target.manifest.Files {
		if seen[f.SHA256] {
			continue
		}
		seen[f.SHA256] = true
		if base != nil {
			if _, ok := base.files[f.SHA256]; ok {
				continue
			}
		}
		need = append(need, f)
	}
	var total atomic.Int64
	var lastEdge atomic.Value
	lastEdge.Store(b.cfg.Edges[order[0]])
	// Parallel downloads at a time; the first failure cancels the others
	// and is the one reported.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.cfg.Parallel)
	for _, f := range need {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			n, edge, err := b.fetchBlob(gctx, order, f)
			total.Add(n)
			if err == nil {
				lastEdge.Store(edge)
			}
			return err
		})
	}
	err := g.Wait()
	return total.Load(), lastEdge.Load().(string), err
}

// fetchBlob downloads one file, trying each edge in order.
func (b *Bench) fetchBlob(ctx context.Context, order []int, f release.File) (int64, string, error) {
	path := "/v1/blobs/" + f.SHA256.String()
	timeout := b.cfg.Timeout + time.Duration(f.Size>>20)*time.Second
	var total int64
	var errs []error
	for _, ei := range order {
		if ctx.Err() != nil {
			break
		}
		edge := b.cfg.Edges[ei]
		n, err := get(ctx, b.http, edge+path, timeout, func(r *response) error {
			if int64(len(r.Body)) != f.Size {
				return fmt.Errorf("%w: %s is %d bytes, the manifest says %d", ErrVerify, f.Path, len(r.Body), f.Size)
			}
			if release.Hash(sha256.Sum256(r.Body)) != f.SHA256 {
				return fmt.Errorf("%w: %s does not match its SHA-256", ErrVerify, f.Path)
			}
			return nil
		})
		total += n
		b.bytes.Add(n)
		if err == nil {
			b.blobBytes.Add(n)
			return total, edge, nil
		}
		b.rec.Error("blob", edge, errKind(err), time.Now())
		errs = append(errs, fmt.Errorf("%s: %w", edge, err))
	}
	return total, "", fmt.Errorf("bench: blob %s: %w", f.Path, errors.Join(errs...))
}

// event is one device event, in the shape the edge's POST /v1/events
// takes (an array of these; see the rollout branch's stats.Event).
type event struct {
	Action  string `json:"action"`
	App     string `json:"app"`
	Channel string `json:"channel"`
	Device  string `json:"device"`
	Release string `json:"release"`
	Version string `json:"version,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
	Time    int64  `json:"time,omitempty"`
	Error   string `json:"error,omitempty"`
	Cause   string `json:"cause,omitempty"`
}

// report posts the events of one update to the edge the device prefers:
// download and install after a success, fail (cause verify or download)
// after a failure. It is best effort: an error is counted under "event"
// and never fails the update, and an edge without the endpoint (404 or
// 405) turns events off for the run. All simulated devices share one
// source address, so an edge's per-address event limit answers 429: that
// is counted as throttled, apart from errors (the run did not fail).
func (b *Bench) report(ctx context.Context, d *simDevice, to *relInfo, n int64, cause error) {
	if !b.cfg.Events || b.eventsOff.Load() {
		return
	}
	now := time.Now().UnixMilli()
	base := event{App: b.cfg.App, Channel: b.cfg.Channel, Device: d.id, Release: to.id().String(), Version: to.ref.Version, Time: now}
	var evs []event
	if cause != nil {
		ev := base
		ev.Action, ev.Bytes, ev.Error, ev.Cause = "fail", n, cause.Error(), "download"
		if errors.Is(cause, ErrVerify) {
			ev.Cause = "verify"
		}
		if len(ev.Error) > 256 {
			ev.Error = ev.Error[:256]
		}
		evs = append(evs, ev)
	} else {
		dl, in := base, base
		dl.Action, dl.Bytes = "download", n
		in.Action = "install"
		evs = append(evs, dl, in)
	}
	body, _ := json.Marshal(evs)
	edge := b.cfg.Edges[d.order[0]]
	start := time.Now()
	_, err := do(ctx, b.http, "POST", edge+"/v1/events", body, b.cfg.Timeout, nil)
	end := time.Now()
	var se *statusError
	if errors.As(err, &se) && (se.code == 404 || se.code == 405) {
		if !b.eventsOff.Swap(true) {
			b.cfg.Logger.Info("the edge has no /v1/events endpoint; device events are off for this run", "edge", edge)
		}
		return
	}
	if errors.As(err, &se) && se.code == 429 {
		b.rec.Throttle("event", end)
		return
	}
	if err != nil {
		b.rec.Error("event", edge, errKind(err), end)
		return
	}
	b.rec.Record("event", edge, end, end.Sub(start), 0)
}
