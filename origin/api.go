package origin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/internal/httpenc"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns the origin's HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "role": "origin"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))

	// Public, read-only and content-addressed: what edges pull.
	mux.HandleFunc("GET /v1/state", s.handleState)
	mux.HandleFunc("GET /v1/releases/{id}", s.handleReleaseByID)
	mux.HandleFunc("GET /v1/blobs/{hash}", s.handleBlob)
	mux.HandleFunc("GET /v1/keys/origin", s.handleOriginKey)
	mux.HandleFunc("GET /v1/patches/{base}/{target}", s.handlePatch)
	mux.HandleFunc("GET /v1/origin/statement", s.handleOriginStatement)
	mux.HandleFunc("POST /v1/gc", s.handleGC)

	// CI and operator API, authenticated by API key.
	mux.HandleFunc("GET /v1/apps", s.handleApps)
	mux.HandleFunc("POST /v1/apps/{app}/releases", s.handleUpload)
	mux.HandleFunc("GET /v1/apps/{app}/releases", s.handleReleases)
	mux.HandleFunc("GET /v1/apps/{app}/releases/{version}", s.handleRelease)
	mux.HandleFunc("GET /v1/apps/{app}/channels", s.handleChannels)
	mux.HandleFunc("PUT /v1/apps/{app}/channels/{channel}", s.handleSetChannel)
	mux.HandleFunc("POST /v1/apps/{app}/channels/{channel}/rollback", s.handleRollback)
	mux.HandleFunc("POST /v1/keys", s.handleCreateKey)
	s.capgoRoutes(mux)
	s.releaseRoutes(mux)
	s.trustRoutes(mux)
	s.consoleRoutes(mux)
	// JSON answers over 1 KB (the state edges pull, release lists) go out
	// compressed to clients that accept it (docs/decisions/014).
	return s.m.instrument(httpenc.Handler(mux))
}

// channelView shows a record this origin has just signed.
func channelView(env *release.Envelope, unchanged bool) wire.ChannelView {
	v := wire.ChannelView{Envelope: env, Unchanged: unchanged}
	if c, err := env.Channel(); err == nil {
		v.Channel = *c
	}
	return v
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, errUnauthenticated):
		status = http.StatusUnauthorized
	case errors.Is(err, errForbidden):
		status = http.StatusForbidden
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, ErrBadRequest), errors.Is(err, release.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, store.ErrUnavailable):
		// The database or bucket is away: nothing was committed, and the
		// same request succeeds once it is back (or on another origin).
		status = http.StatusServiceUnavailable
		s.log.Error("api error: store unavailable", "err", err)
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		s.log.Error("api error", "err", err)
	}
	msg = strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(msg, "origin: "), "bad request: "), "forbidden: ")
	writeJSON(w, status, wire.Error{Error: strings.ReplaceAll(msg, "\n", " ")})
}

func (s *Server) handleState(w http.ResponseWriter, r *http.Request) {
	envs, err := s.st.channels("")
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"channels": envs})
}

func immutable(w http.ResponseWriter, etag string) {
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("ETag", `"`+etag+`"`)
}

func (s *Server) handleReleaseByID(w http.ResponseWriter, r *http.Request) {
	id, err := release.ParseHash(r.PathValue("id"))
	if err != nil {
		s.fail(w, badRequest("release id: %v", err))
		return
	}
	rec, err := s.st.releaseByID(id)
	if err != nil {
		s.fail(w, err)
		return
	}
	immutable(w, id.String())
	writeJSON(w, http.StatusOK, rec.Envelope)
}

func (s *Server) handleBlob(w http.ResponseWriter, r *http.Request) {
	h, err := release.ParseHash(r.PathValue("hash"))
	if err != nil {
		s.fail(w, badRequest("blob hash: %v", err))
		return
	}
	f, err := s.blobs.open(h)
	if err != nil {
		s.fail(w, fmt.Errorf("blob %s: %w", h, ErrNotFound))
		return
	}
	defer f.Close()
	immutable(w, h.String())
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, f)
}

func (s *Server) handleOriginKey(w http.ResponseWriter, r *http.Request) {
	pub, err := release.EncodePublicKey(s.PublicKey(), release.RoleOrigin)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(pub)
}

func (s *Server) handleApps(w http.ResponseWriter, r *http.Request) {
	k, err := s.authorize(r, wire.RoleReader, "")
	if err != nil {
		s.fail(w, err)
		return
	}
	apps, err := s.st.apps()
	if err != nil {
		s.fail(w, err)
		return
	}
	out := []wire.AppView{}
	for i := range apps {
		if scopeAllows(k, apps[i].ID) {
			out = append(out, viewApp(&apps[i]))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"apps": out})
}

// maxManifestPart bounds the signed-manifest part of an upload.
const maxManifestPart = release.MaxManifestBytes

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	key, err := s.authorize(r, wire.RolePublisher, app)
	if err != nil {
		s.fail(w, err)
		return
	}
	// The Capgo parts of a multipart upload are stored as blobs before
	// Upload runs: the upload is registered from here (see gc.go).
	endWrite, err := s.beginWrite(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	defer endWrite()
	q := r.URL.Query()
	req := &UploadRequest{App: app, Version: q.Get("version"), MinNative: q.Get("min_native"), Channel: q.Get("channel"), RolloutBPS: release.FullRollout, UploadedBy: key.ID,
		NewChannel: q.Get("new_channel") == "1"}
	if v := q.Get("rollout"); v != "" {
		bps, err := ParseRollout(v)
		if err != nil {
			s.fail(w, err)
			return
		}
		req.RolloutBPS = bps
	}
	if req.UploadKey = r.Header.Get("Idempotency-Key"); len(req.UploadKey) > maxUploadKey {
		s.fail(w, badRequest("Idempotency-Key is over %d bytes", maxUploadKey))
		return
	}
	if err := s.CheckUpload(req); err != nil {
		if rec := replayed(err); rec != nil {
			out := *rec
			out.Envelope = nil
			writeJSON(w, http.StatusCreated, wire.UploadAnswer{Record: out})
			return
		}
		s.fail(w, err)
		return
	}
	body := io.Reader(r.Body)
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "multipart/form-data" {
		mr := multipart.NewReader(r.Body, params["boundary"])
		var bundlePart io.Reader
		for bundlePart == nil {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				s.fail(w, badRequest("multipart upload: %v", err))
				return
			}
			switch p.FormName() {
			case "manifest":
				b, err := io.ReadAll(io.LimitReader(p, maxManifestPart+1))
				if err != nil || len(b) > maxManifestPart {
					s.fail(w, badRequest("signed manifest part is unreadable or over %d bytes", maxManifestPart))
					return
				}
				env, err := release.DecodeEnvelope(b)
				if err != nil {
					s.fail(w, badRequest("signed manifest: %v", err))
					return
				}
				req.Envelope = env
			case "bundle":
				bundlePart = p
			case CapgoPartMeta, CapgoPartZip:
				if err := s.readCapgoPart(p, req); err != nil {
					s.fail(w, err)
					return
				}
			}
		}
		if bundlePart == nil {
			s.fail(w, badRequest("multipart upload has no \"bundle\" part"))
			return
		}
		body = bundlePart
	}
	rec, err := s.Upload(r.Context(), req, body)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := *rec
	out.Envelope = nil
	warnings := s.nativeWarnings(req.App, req.Version, req.MinNative)
	if rec.Envelope != nil && len(rec.Envelope.Signatures) == 0 {
		warnings = append(warnings, fmt.Sprintf("release %s is not signed: devices that verify releases (capstan device, Capstan's own clients) refuse it; only @capgo/capacitor-updater devices install it. Sign uploads with --sign-key (capstan keys gen)", rec.Version))
	}
	writeJSON(w, http.StatusCreated, wire.UploadAnswer{Record: out, Warnings: warnings})
}

// ParseRollout turns a percentage ("30", "12.5", "30%") into basis points.
func ParseRollout(v string) (int, error) {
	f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
	if err != nil || f < 0 || f > 100 {
		return 0, badRequest("rollout %q must be a percentage between 0 and 100", v)
	}
	return int(f*100 + 0.5), nil
}

func (s *Server) handleReleases(w http.ResponseWriter, r *http.Request) {
	app, ok := s.readableApp(w, r)
	if !ok {
		return
	}
	recs, err := s.st.releases(app)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"releases": recs})
}

func (s *Server) handleRelease(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	if _, err := s.authorize(r, wire.RoleReader, app); err != nil {
		s.fail(w, err)
		return
	}
	rec, err := s.st.release(app, r.PathValue("version"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) handleChannels(w http.ResponseWriter, r *http.Request) {
	app, ok := s.readableApp(w, r)
	if !ok {
		return
	}
	envs, err := s.st.channels(app)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := []wire.ChannelView{}
	for _, e := range envs {
		if c, err := e.Channel(); err == nil {
			out = append(out, wire.ChannelView{Channel: *c, Envelope: e})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"channels": out})
}

const maxJSONBody = 64 << 10

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON body: %v", err)
	}
	return nil
}

func (s *Server) handleSetChannel(w http.ResponseWriter, r *http.Request) {
	app, ch := r.PathValue("app"), r.PathValue("channel")
	if _, err := s.authorize(r, wire.RolePublisher, app); err != nil {
		s.fail(w, err)
		return
	}
	var body wire.SetChannelBody
	if err := decodeBody(r, &body); err != nil {
		s.fail(w, err)
		return
	}
	req := ChannelRequest{App: app, Channel: ch, Version: body.Version, RolloutBPS: -1, Paused: body.Paused,
		BlockMajor: body.BlockMajor, DeviceSelect: body.DeviceSelect, Default: body.Default, NewChannel: body.NewChannel}
	if body.Rollout != nil {
		if *body.Rollout < 0 || *body.Rollout > 100 {
			s.fail(w, badRequest("rollout must be between 0 and 100 percent"))
			return
		}
		req.RolloutBPS = int(*body.Rollout*100 + 0.5)
	}
	env, changed, err := s.SetChannelChanged(req)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, channelView(env, !changed))
}

func (s *Server) handleRollback(w http.ResponseWriter, r *http.Request) {
	app, ch := r.PathValue("app"), r.PathValue("channel")
	if _, err := s.authorize(r, wire.RolePublisher, app); err != nil {
		s.fail(w, err)
		return
	}
	var body wire.RollbackBody
	if r.ContentLength != 0 {
		if err := decodeBody(r, &body); err != nil {
			s.fail(w, err)
			return
		}
	}
	if _, err := s.st.app(app); err != nil {
		s.fail(w, err)
		return
	}
	env, err := s.Rollback(app, ch, body.To)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, channelView(env, false))
}

func (s *Server) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authorize(r, wire.RoleAdmin, ""); err != nil {
		s.fail(w, err)
		return
	}
	var body wire.CreateKeyBody
	if err := decodeBody(r, &body); err != nil {
		s.fail(w, err)
		return
	}
	k, secret, err := s.CreateKey(body)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, wire.CreatedKey{Key: secret, ID: k.ID, Role: k.Role, Apps: k.Apps, Expires: k.Expires})
}
