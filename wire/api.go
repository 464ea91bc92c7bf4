package wire

import (
	"time"

	"github.com/capstan-ota/capstan/release"
)

// This file holds the bodies of the origin's CI and operator API
// (docs/api.md): what `capstan` and origin/client send, and what the
// origin answers. The origin's handlers encode and decode these very
// types, so a field added on one side is there on the other.

// Role is what an API key may do.
type Role string

// Roles, from most to least powerful.
const (
	RoleAdmin     Role = "admin"     // everything, every app
	RolePublisher Role = "publisher" // upload and channel changes for its apps
	RoleReader    Role = "reader"    // read releases, channels and stats of its apps
)

// Builtin is the version name that means "the bundle shipped inside the
// app": a channel serving it, or a rollback to it (RollbackBody.To).
const Builtin = "builtin"

// APIKey is an API key as the origin keeps it and GET /v1/keys lists it.
// Only the SHA-256 of the secret is kept; the secret itself is shown once,
// in CreatedKey.
type APIKey struct {
	ID      string    `json:"id"`
	Name    string    `json:"name,omitempty"`
	Role    Role      `json:"role"`
	Apps    []string  `json:"apps,omitempty"` // empty: every app (admin only)
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	Hash    string    `json:"hash"`
}

// CreateKeyBody is the JSON body of POST /v1/keys.
type CreateKeyBody struct {
	Name    string    `json:"name,omitempty"`
	Role    Role      `json:"role"`
	Apps    []string  `json:"apps,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
}

// CreatedKey is the answer of POST /v1/keys: the only time the secret is
// shown.
type CreatedKey struct {
	Key  string   `json:"key"`
	ID   string   `json:"id"`
	Role Role     `json:"role"`
	Apps []string `json:"apps"`
	// Expires is absent for a key that never expires.
	Expires time.Time `json:"expires,omitzero"`
}

// AppSettings changes an app's trust settings. Nil or empty fields keep the
// current value. It is the JSON body of PUT /v1/apps/{app}.
type AppSettings struct {
	// AddReleaseKeys are PEM public keys (from `capstan keys gen`) whose
	// signatures the origin accepts on the app's release manifests.
	AddReleaseKeys []string `json:"add_release_keys,omitempty"`
	// RemoveReleaseKeys are key IDs to stop accepting.
	RemoveReleaseKeys []string `json:"remove_release_keys,omitempty"`
	// RequireSigning refuses uploads that no registered release key signed.
	// It can only be turned on while at least one release key is
	// registered. Registering a key turns it on by itself (AppView.
	// SigningRequired); false allows unsigned uploads explicitly.
	RequireSigning *bool `json:"require_signing,omitempty"`
	// EncryptKey is the PEM X25519 public key of the app (whose private
	// half the app ships); "" turns encryption off for future releases.
	EncryptKey *string `json:"encrypt_key,omitempty"`
}

// AppView is an app as the API shows it (GET and PUT /v1/apps/{app}, GET
// /v1/apps): key IDs and PEM public keys rather than raw bytes.
type AppView struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	// RequireSigning and AllowUnsigned are the app's stored choices;
	// SigningRequired is the policy they make (decision 103).
	RequireSigning bool `json:"require_signing,omitempty"`
	AllowUnsigned  bool `json:"allow_unsigned,omitempty"`
	// EncryptKey is the app's raw X25519 public key, if releases are
	// encrypted.
	EncryptKey      []byte   `json:"encrypt_key,omitempty"`
	SigningRequired bool     `json:"signing_required"`
	ReleaseKeyIDs   []string `json:"release_key_ids,omitempty"`
	ReleaseKeyPEM   []string `json:"release_keys_pem,omitempty"`
	Encrypted       bool     `json:"encrypted"`
}

// UploadAnswer is the answer to POST /v1/apps/{app}/releases: the stored
// release (without its envelope) and warnings for the uploader (such as
// the share of the fleet whose native version is too old for it).
type UploadAnswer struct {
	release.Record
	Warnings []string `json:"warnings,omitempty"`
}

// ChannelView is a channel record as the API shows it: the record's
// fields, and the signed envelope they came from.
type ChannelView struct {
	release.Channel
	Envelope *release.Envelope `json:"envelope"`
	// Unchanged says a change asked for nothing new: no record was signed.
	Unchanged bool `json:"unchanged,omitempty"`
}

// SetChannelBody is the JSON body of PUT /v1/apps/{app}/channels/{channel}:
// a change to a channel; nil fields keep their value.
type SetChannelBody struct {
	Version string   `json:"version,omitempty"`
	Rollout *float64 `json:"rollout,omitempty"` // percent
	Paused  *bool    `json:"paused,omitempty"`
	// BlockMajor, DeviceSelect and Default set the channel flags of the
	// same names (see release.Channel); absent keeps them.
	BlockMajor   *bool `json:"block_major,omitempty"`
	DeviceSelect *bool `json:"device_select,omitempty"`
	Default      *bool `json:"default,omitempty"`
	// NewChannel allows a channel the app does not have yet.
	NewChannel bool `json:"new_channel,omitempty"`
}

// RollbackBody is the JSON body of POST …/channels/{channel}/rollback.
type RollbackBody struct {
	// To names the version to go back to; empty means the one served
	// before, Builtin the bundle inside the app.
	To string `json:"to,omitempty"`
}

// PromoteBody is the JSON body of POST …/channels/{to}/promote.
type PromoteBody struct {
	From    string   `json:"from"`
	Rollout *float64 `json:"rollout,omitempty"` // percent; absent: 100
	// NewChannel allows the target to be a channel the app does not have.
	NewChannel bool `json:"new_channel,omitempty"`
}

// ChannelPolicy overrides the origin-wide auto-pause policy for one
// channel; it is the body and the answer of PUT …/channels/{channel}/policy.
// It lives only on the origin (edges and devices do not need it), so it is
// not part of the signed channel record. Nil fields keep the stored value.
type ChannelPolicy struct {
	AutoPauseFailureRate *float64 `json:"auto_pause_failure_rate,omitempty"`
	AutoPauseMinDevices  *int     `json:"auto_pause_min_devices,omitempty"`
	// AutoPauseMinAddresses is the fewest distinct network addresses
	// failures must come from (origin.AutoPausePolicy.MinAddresses).
	AutoPauseMinAddresses *int `json:"auto_pause_min_addresses,omitempty"`
}

// Counters are the durable per-release counts, and their sums per channel
// and app. Devices and FailedDevices are HyperLogLog estimates (about 1.6 %
// standard error, near exact below a few thousand); the others are exact
// counts of the events received.
type Counters struct {
	// Checks counts update checks made while running the release.
	Checks uint64 `json:"checks"`
	// Downloads, Installs, Confirms, Failures and Reverts count the
	// events of those names about the release.
	Downloads uint64 `json:"downloads"`
	Installs  uint64 `json:"installs"`
	Confirms  uint64 `json:"confirms"`
	Failures  uint64 `json:"failures"`
	Reverts   uint64 `json:"reverts"`
	// Bytes is what devices reported downloading for the release.
	Bytes uint64 `json:"bytes"`
	// Devices is the distinct devices that reported anything about the
	// release (running it, downloading it, failing it).
	Devices uint64 `json:"devices"`
	// FailedDevices is the distinct devices that reported a fail or a
	// revert; FailureRate is FailedDevices/Devices.
	FailedDevices uint64  `json:"failed_devices"`
	FailureRate   float64 `json:"failure_rate"`
	// FailedAddresses is the distinct network addresses (IPv4, IPv6 /64)
	// the failures came from, as the edges saw them (an estimate).
	FailedAddresses uint64 `json:"failed_addresses"`
}

// AutoPause records that the origin paused a rollout on its own.
type AutoPause struct {
	// At is when, Seq the channel record that paused the rollout.
	At  time.Time `json:"at"`
	Seq uint64    `json:"seq"`
	// FailureRate, Devices and FailedDevices are the figures that crossed
	// Threshold (fractions, device estimates).
	FailureRate   float64 `json:"failure_rate"`
	Devices       uint64  `json:"devices"`
	FailedDevices uint64  `json:"failed_devices"`
	Threshold     float64 `json:"threshold"`
	// FailedAddresses is how many addresses the failures came from.
	FailedAddresses uint64 `json:"failed_addresses"`
}

// ReleaseStats is one release's stats on one channel.
type ReleaseStats struct {
	Version string       `json:"version"`
	Release release.Hash `json:"release"`
	Counters
	// AutoPaused is set when the origin paused this release's rollout
	// because of its failure rate.
	AutoPaused *AutoPause `json:"auto_paused,omitempty"`
}

// ChannelStats is one channel: what it serves now, its totals and each
// release's stats (newest semver first).
type ChannelStats struct {
	Channel string `json:"channel"`
	// Serving, RolloutBPS and Paused describe the channel's current record
	// (Serving is Builtin for the bundle inside the app).
	Serving    string `json:"serving"`
	RolloutBPS int    `json:"rollout_bps"`
	Paused     bool   `json:"paused"`
	// Totals sums the releases (device counts are merged sketches).
	Totals   Counters       `json:"totals"`
	Releases []ReleaseStats `json:"releases"`
}

// StatsReport is the answer of GET /v1/apps/{app}/stats.
type StatsReport struct {
	App string `json:"app"`
	// Totals sums every channel of the app.
	Totals   Counters       `json:"totals"`
	Channels []ChannelStats `json:"channels"`
}

// GCBody is the JSON body of POST /v1/gc (admin): Grace, a Go duration
// ("1h"; empty: the origin's), keeps anything written more recently;
// DryRun reports and deletes nothing.
type GCBody struct {
	Grace  string `json:"grace,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// GCReport is the answer of POST /v1/gc: what one garbage collection pass
// did (or, with DryRun, would do).
type GCReport struct {
	DryRun bool `json:"dry_run,omitempty"`
	// Patches and Derived count index entries dropped: patches, and Capgo
	// zips and payloads, no device will need.
	Patches int `json:"patches"`
	Derived int `json:"derived"`
	// Blobs and Bytes count deleted blobs; Kept counts blobs still
	// referenced (or within the grace).
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	Kept  int   `json:"kept"`
	// Leftovers counts upload temp files deleted.
	Leftovers int `json:"leftovers"`
	// Skipped says why blobs were not swept this time (uploads or builds
	// under way, a store that cannot delete); empty when they were.
	Skipped string `json:"skipped,omitempty"`
	Took    string `json:"took"`
}
