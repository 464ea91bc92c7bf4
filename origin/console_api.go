package origin

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/capstan-ota/capstan/origin/console"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// consoleRoutes adds the operator console (static, public: it holds no
// data) and the read-only endpoints it needs beyond the CI API. Every
// action the console offers goes through the existing endpoints, so
// roles and app scopes apply unchanged.
func (s *Server) consoleRoutes(mux *http.ServeMux) {
	mux.Handle("GET /console", console.Handler())
	mux.Handle("GET /console/{file...}", console.Handler())
	mux.HandleFunc("GET /v1/whoami", s.handleWhoami)
	mux.HandleFunc("GET /v1/fleet", s.handleFleet)
	mux.HandleFunc("POST /v1/edges/report", s.handleEdgeReport)
	mux.HandleFunc("GET /v1/apps/{app}/release-details", s.handleReleaseDetails)
	mux.HandleFunc("GET /v1/apps/{app}/channel-details", s.handleChannelDetails)
	mux.HandleFunc("GET /v1/apps/{app}/channels/{channel}/policy", s.handleGetPolicy)
	mux.HandleFunc("GET /v1/apps/{app}/channels/{channel}/timeline", s.handleTimeline)
}

// handleWhoami tells the caller what its key may do, so a UI can show
// only the actions the server would allow (the server checks anyway).
func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	k, err := s.authorize(r, wire.RoleReader, "")
	if err != nil {
		s.fail(w, err)
		return
	}
	k.Hash = ""
	writeJSON(w, http.StatusOK, k)
}

// maxReleaseDetails bounds GET …/release-details to the newest releases.
const maxReleaseDetails = 200

// maxPatchBases bounds the patch sizes listed per release: from the few
// releases before it, which are what devices run.
const maxPatchBases = 5

// PatchSize is the size of a built patch from an earlier release.
type PatchSize struct {
	From  string `json:"from"`
	Bytes int64  `json:"bytes"`
}

// ReleaseDetail is a release as the console lists it.
type ReleaseDetail struct {
	Version  string       `json:"version"`
	ID       release.Hash `json:"id"`
	Uploaded time.Time    `json:"uploaded"`
	// UploadedBy is the ID of the API key that uploaded it, and that key's
	// name when it still exists (empty for releases stored before keys
	// were recorded).
	UploadedBy     string `json:"uploaded_by,omitempty"`
	UploadedByName string `json:"uploaded_by_name,omitempty"`
	Size           int64  `json:"size"`
	Files          int    `json:"files"`
	MinNative      string `json:"min_native,omitempty"`
	// Signers are the key IDs of the release signatures (empty: unsigned).
	Signers   []string `json:"signers"`
	Encrypted bool     `json:"encrypted"`
	// FullBytes is the size of the compressed full bundle devices download
	// without a patch (0: not built yet).
	FullBytes int64 `json:"full_bytes"`
	// Patches are the built patches to it from the releases just before.
	Patches []PatchSize `json:"patches"`
}

// ReleaseDetails lists an app's newest releases with their signature,
// encryption, uploader and patch sizes. It reads them in one transaction
// (a poll of the console costs one round trip to a shared database) and
// blob sizes through a cache (blobs never change).
func (s *Server) ReleaseDetails(app string) ([]ReleaseDetail, error) {
	recs, err := s.st.releases(app)
	if err != nil {
		return nil, err
	}
	if len(recs) > maxReleaseDetails {
		recs = recs[:maxReleaseDetails]
	}
	names := map[string]string{}
	if keys, err := s.Keys(); err == nil {
		for _, k := range keys {
			names[k.ID] = k.Name
		}
	}
	out := make([]ReleaseDetail, len(recs))
	fulls := make([]release.Hash, len(recs))
	patches := make([][]release.Hash, len(recs))
	err = s.db.View(func(txn store.Txn) error {
		for i, r := range recs {
			d := &out[i]
			*d = ReleaseDetail{Version: r.Version, ID: r.ID, Uploaded: r.Uploaded, UploadedBy: r.UploadedBy,
				UploadedByName: names[r.UploadedBy], Size: r.Size, Files: r.Files, Signers: []string{}, Patches: []PatchSize{}}
			var full release.Record
			if getJSON(txn, releaseKey(app, r.Version), &full) == nil && full.Envelope != nil {
				for _, sg := range full.Envelope.Signatures {
					d.Signers = append(d.Signers, sg.KeyID)
				}
				if m, err := full.Envelope.Manifest(); err == nil {
					d.MinNative = m.MinNative
				}
			}
			if _, err := txn.Get(pfxSealed + r.ID.String()); err == nil {
				d.Encrypted = true
			}
			fulls[i], _ = indexEntry(txn, patchKey(release.Hash{}, r.ID))
			for _, base := range recs[i+1 : min(len(recs), i+1+maxPatchBases)] {
				h, _ := indexEntry(txn, patchKey(base.ID, r.ID))
				patches[i] = append(patches[i], h)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("origin: release details: %w", err)
	}
	for i := range out {
		out[i].FullBytes = s.blobSize(fulls[i])
		for j, h := range patches[i] {
			if n := s.blobSize(h); n > 0 {
				out[i].Patches = append(out[i].Patches, PatchSize{From: recs[i+1+j].Version, Bytes: n})
			}
		}
	}
	return out, nil
}

// indexEntry reads a derived-blob index entry (zero when there is none).
func indexEntry(txn store.Txn, key string) (release.Hash, error) {
	var h release.Hash
	b, err := txn.Get(key)
	if err != nil {
		return h, err
	}
	if len(b) != len(h) {
		return h, fmt.Errorf("bad index entry %s", key)
	}
	copy(h[:], b)
	return h, nil
}

// sizeCache remembers blob sizes: blobs are content-addressed and never
// change, and on S3 each lookup is a request.
type sizeCache struct {
	mu sync.Mutex // guards m
	m  map[release.Hash]int64
}

// maxSizeCache bounds the cache; past it, it starts afresh.
const maxSizeCache = 4096

// blobSize is a stored blob's size, or 0 for the zero hash or a blob that
// is not there (not built yet).
func (s *Server) blobSize(h release.Hash) int64 {
	if h.IsZero() {
		return 0
	}
	c := &s.sizes
	c.mu.Lock()
	n, ok := c.m[h]
	c.mu.Unlock()
	if ok {
		return n
	}
	n, err := s.blobs.b.Size(s.life, h)
	if err != nil {
		return 0
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxSizeCache {
		c.m = map[release.Hash]int64{}
	}
	c.m[h] = n
	c.mu.Unlock()
	return n
}

// derivedSize is the size of a built derived blob (patch, full bundle),
// or 0 when it is not built.
func (s *Server) derivedSize(key string) int64 {
	var h release.Hash
	s.db.View(func(txn store.Txn) error { h, _ = indexEntry(txn, key); return nil })
	return s.blobSize(h)
}

func (s *Server) handleReleaseDetails(w http.ResponseWriter, r *http.Request) {
	app, ok := s.readableApp(w, r)
	if !ok {
		return
	}
	out, err := s.ReleaseDetails(app)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"releases": out})
}

// ChannelDetail is what the console needs about a channel beyond its
// signed record.
type ChannelDetail struct {
	Channel string `json:"channel"`
	// Fallback is what devices outside a partial or paused rollout of the
	// current release get: the record's Stable, or else the release the
	// channel served to everyone before (decision 102), which a narrowed
	// rollout or a pause would make its Stable. Absent: they keep what
	// they run.
	Fallback *release.Ref `json:"fallback,omitempty"`
}

func (s *Server) handleChannelDetails(w http.ResponseWriter, r *http.Request) {
	app, ok := s.readableApp(w, r)
	if !ok {
		return
	}
	envs, err := s.st.channels(app)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := []ChannelDetail{}
	for _, env := range envs {
		c, err := env.Channel()
		if err != nil {
			continue
		}
		d := ChannelDetail{Channel: c.Channel, Fallback: c.Stable}
		if d.Fallback == nil && !c.Release.ID.IsZero() {
			hist, err := s.st.history(app, c.Channel)
			if err != nil {
				s.fail(w, err)
				return
			}
			if ref, ok := servedBefore(hist, c.Release.ID); ok {
				d.Fallback = &ref
			}
		}
		out = append(out, d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"channels": out})
}

// PolicyView is a channel's effective auto-pause policy, and its overrides.
type PolicyView struct {
	AutoPausePolicy
	Overrides wire.ChannelPolicy `json:"overrides"`
}

func (s *Server) handleGetPolicy(w http.ResponseWriter, r *http.Request) {
	app, ok := s.readableApp(w, r)
	if !ok {
		return
	}
	ch := r.PathValue("channel")
	if _, _, err := s.st.channel(app, ch); err != nil {
		s.fail(w, err)
		return
	}
	v := PolicyView{AutoPausePolicy: s.policyFor(app, ch)}
	s.db.View(func(txn store.Txn) error { return getJSON(txn, pfxPolicy+app+"/"+ch, &v.Overrides) })
	writeJSON(w, http.StatusOK, v)
}

// TimelineView is the answer of GET …/channels/{channel}/timeline.
type TimelineView struct {
	App     string `json:"app"`
	Channel string `json:"channel"`
	// IntervalSeconds is the width of each point.
	IntervalSeconds float64 `json:"interval_seconds"`
	// SampleLevel says devices are counted from a 1-in-2^level sample of
	// device ids (0: every device is counted).
	SampleLevel int `json:"sample_level"`
	// AutoPause is the channel's policy, to draw its threshold.
	AutoPause AutoPausePolicy `json:"auto_pause"`
	Points    []TimelinePoint `json:"points"`
}

func (s *Server) handleTimeline(w http.ResponseWriter, r *http.Request) {
	app, ok := s.readableApp(w, r)
	if !ok {
		return
	}
	ch := r.PathValue("channel")
	if _, _, err := s.st.channel(app, ch); err != nil {
		s.fail(w, err)
		return
	}
	tier := 0
	switch r.URL.Query().Get("range") {
	case "", "3h":
	case "30d":
		tier = 1
	default:
		s.fail(w, badRequest("range must be 3h (one point a minute) or 30d (one point an hour)"))
		return
	}
	points, level := s.timeline.series(app, ch, tier, s.cfg.Now())
	full := map[release.Hash]int64{}
	for i := range points {
		for j := range points[i].Releases {
			tr := &points[i].Releases[j]
			if tr.Downloads == 0 || tr.Release == otherRelease {
				continue
			}
			n, ok := full[tr.Release]
			if !ok {
				n = s.derivedSize(patchKey(release.Hash{}, tr.Release))
				if n == 0 {
					if rec, err := s.st.releaseByID(tr.Release); err == nil {
						n = rec.Size
					}
				}
				full[tr.Release] = n
			}
			tr.FullBytes = tr.Downloads * uint64(n)
		}
	}
	writeJSON(w, http.StatusOK, TimelineView{App: app, Channel: ch, IntervalSeconds: timelineTiers[tier].width.Seconds(),
		SampleLevel: int(level), AutoPause: s.policyFor(app, ch), Points: points})
}

// releaseStats reads one release's durable stats on a channel.
func (s *Server) releaseStats(app, ch string, id release.Hash) (wire.ReleaseStats, bool) {
	var rec statsRecord
	if err := s.db.View(func(txn store.Txn) error { return getJSON(txn, statsKey(app, ch, id), &rec) }); err != nil {
		return wire.ReleaseStats{}, false
	}
	return rec.view(), true
}
