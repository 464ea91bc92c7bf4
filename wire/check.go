package wire

import (
	"github.com/capstan-ota/capstan/release"
)

// Check statuses: what an edge says a device should do.
const (
	// StatusUpdate: install the release in Release (or, with no Release
	// and a channel record naming the zero ID, go back to the bundle
	// inside the app).
	StatusUpdate = "update"
	// StatusUpToDate: the device runs what the channel offers it.
	StatusUpToDate = "up-to-date"
	// StatusBlocked: a version rule keeps the offered release from this
	// device; Reason and Code say which.
	StatusBlocked = "blocked"
)

// CheckAnswer is the body of GET /v1/check (docs/protocol.md §1). Channel
// is the origin-signed channel record; Release, when the device should
// install something, is the CI-signed release document of the target
// (TypeReleaseDoc: a few hundred bytes whatever the bundle, naming its file
// list by hash), or for releases uploaded before format 2 the full signed
// manifest. A device verifies both before it downloads anything else.
type CheckAnswer struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Code names the rule behind a "blocked" answer (release.Block…).
	Code    string            `json:"code,omitempty"`
	Channel *release.Envelope `json:"channel"`
	Release *release.Envelope `json:"release,omitempty"`
}

// MaxCheckAnswerBytes bounds a check answer a client reads: two envelopes
// and a reason. A format 1 release (a full manifest) can be larger; clients
// that still install such releases read up to release.MaxManifestBytes.
const MaxCheckAnswerBytes = 64 << 10

// Error is the body of every JSON error answer: {"error":"…"}.
type Error struct {
	Error string `json:"error"`
}
