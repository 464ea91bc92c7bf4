package origin

import (
	"net/http"
)

// releaseRoutes adds the release-management endpoints: promote, device
// events from edges, and stats.
func (s *Server) releaseRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/apps/{app}/channels/{channel}/promote", s.handlePromote)
	mux.HandleFunc("POST /v1/events", s.handleEvents)
	mux.HandleFunc("GET /v1/apps/{app}/stats", s.handleStats)
	mux.HandleFunc("PUT /v1/apps/{app}/channels/{channel}/policy", s.handleSetPolicy)
}

// PromoteBody is the JSON body of POST …/channels/{to}/promote.
type PromoteBody struct {
	From    string   `json:"from"`
	Rollout *float64 `json:"rollout,omitempty"` // percent; absent: 100
	// NewChannel allows the target to be a channel the app does not have.
	NewChannel bool `json:"new_channel,omitempty"`
}

func (s *Server) handlePromote(w http.ResponseWriter, r *http.Request) {
	app, to := r.PathValue("app"), r.PathValue("channel")
	if _, err := s.authorize(r, RolePublisher, app); err != nil {
		s.fail(w, err)
		return
	}
	var body PromoteBody
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
	c, _ := env.Channel()
	writeJSON(w, http.StatusOK, ChannelView{Channel: c, Envelope: env})
}
