package origin

import (
	"net/http"

	"github.com/capstan-ota/capstan/wire"
)

// releaseRoutes adds the release-management endpoints: promote, device
// events from edges, and stats.
func (s *Server) releaseRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/apps/{app}/channels/{channel}/promote", s.handlePromote)
	mux.HandleFunc("POST /v1/events", s.handleEvents)
	mux.HandleFunc("GET /v1/apps/{app}/stats", s.handleStats)
	mux.HandleFunc("PUT /v1/apps/{app}/channels/{channel}/policy", s.handleSetPolicy)
}

func (s *Server) handlePromote(w http.ResponseWriter, r *http.Request) {
	app, to := r.PathValue("app"), r.PathValue("channel")
	if _, err := s.authorize(r, wire.RolePublisher, app); err != nil {
		s.fail(w, err)
		return
	}
	var body wire.PromoteBody
	if err := decodeBody(r, &body); err != nil {
		s.fail(w, err)
		return
	}
	bps := -1
	if body.Rollout != nil {
		if *body.Rollout < 0 || *body.Rollout > 100 {
			s.fail(w, badRequest("rollout must be between 0 and 100 percent"))
			return
		}
		bps = int(*body.Rollout*100 + 0.5)
	}
	env, err := s.Promote(app, body.From, to, bps, body.NewChannel)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, channelView(env, false))
}
