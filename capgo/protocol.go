package capgo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/capstan-ota/capstan/release"
)

// Limits on what a device may send. The plugin's own bodies are a few
// hundred bytes; the bounds leave room for proxies and future fields while
// keeping a hostile body cheap to refuse.
const (
	// MaxInfoBody bounds the body of POST /updates and /channel_self.
	MaxInfoBody = 64 << 10
	// MaxStatsBody bounds the body of POST /stats. The plugin queues at
	// most 200 events of well under 1 KiB each.
	MaxStatsBody = 512 << 10
	// MaxStatsEvents bounds the events of one POST /stats.
	MaxStatsEvents = 500
	// MaxDeviceIDLen bounds device_id (Capgo sends a 36-char UUID).
	MaxDeviceIDLen = 128
	// MaxFieldLen bounds every other string field of the info object.
	MaxFieldLen = 256
)

// Kinds of a non-update answer (the plugin normalises anything else to
// KindFailed). Only KindFailed makes the plugin send a download_fail stat.
const (
	KindUpToDate = "up_to_date"
	KindBlocked  = "blocked"
	KindFailed   = "failed"
)

// Error codes of non-update answers. They are Capgo's codes, so apps and
// dashboards written for Capgo read them unchanged; CodeFailedOnDevice is
// Capstan's own.
const (
	CodeNoNewVersion        = "no_new_version_available"
	CodeAlreadyOnBuiltin    = "already_on_builtin"
	CodeBuiltinTooOld       = "revert_to_builtin_plugin_version_too_old"
	CodeDisablePlatform     = "disabled_platform_" // + platform
	CodeDisableMajor        = "disable_auto_update_to_major"
	CodeDisableMinor        = "disable_auto_update_to_minor"
	CodeDisablePatch        = "disable_auto_update_to_patch"
	CodeDisableMetadata     = "disable_auto_update_to_metadata"
	CodeDisableUnderNative  = "disable_auto_update_under_native"
	CodeDisableProdBuild    = "disable_prod_build"
	CodeDisableDevBuild     = "disable_dev_build"
	CodeDisableDevice       = "disable_device"
	CodeDisableEmulator     = "disable_emulator"
	CodeKeyIDMismatch       = "key_id_mismatch"
	CodeFailedOnDevice      = "failed_on_device"
	CodeNoChannel           = "no_channel"
	CodeNoBundle            = "no_bundle"
	CodeSemverError         = "semver_error"
	CodeUnknownVersionBuild = "unknown_version_build"
	CodeMissingInfo         = "missing_info"
	CodeMisconfigured       = "misconfigured_channel"
	CodeTooManyRequests     = "too_many_requests"
	CodeServerError         = "server_error"
)

// Builtin is the version name of the bundle shipped inside the app.
const Builtin = "builtin"

// Str is a JSON string that also accepts a number or a boolean (written as
// its JSON text), because some HTTP clients send version_code as a number.
type Str string

// UnmarshalJSON implements json.Unmarshaler.
func (s *Str) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = Str(v)
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		*s = ""
		return nil
	}
	if len(b) > 0 && (b[0] == '-' || b[0] >= '0' && b[0] <= '9' || b[0] == 't' || b[0] == 'f') {
		*s = Str(b)
		return nil
	}
	return fmt.Errorf("capgo: want a string, got %.20s", b)
}

// Bool is a JSON boolean that also accepts the strings "true" and "false"
// (GET /channel_self sends every field as a query string).
type Bool bool

// UnmarshalJSON implements json.Unmarshaler.
func (v *Bool) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "true", `"true"`:
		*v = true
	case "false", `"false"`, "null", `""`:
		*v = false
	default:
		return fmt.Errorf("capgo: want a boolean, got %.20s", b)
	}
	return nil
}

// Info is the plugin's "info object": the body of POST /updates and the
// base of every stats and channel request. Unknown fields are ignored.
type Info struct {
	Platform       Str  `json:"platform"`
	DeviceID       Str  `json:"device_id"`
	AppID          Str  `json:"app_id"`
	CustomID       Str  `json:"custom_id"`
	VersionBuild   Str  `json:"version_build"`
	VersionCode    Str  `json:"version_code"`
	VersionOS      Str  `json:"version_os"`
	VersionName    Str  `json:"version_name"`
	PluginVersion  Str  `json:"plugin_version"`
	IsEmulator     Bool `json:"is_emulator"`
	IsProd         Bool `json:"is_prod"`
	InstallSource  Str  `json:"install_source"`
	DefaultChannel Str  `json:"defaultChannel"`
	KeyID          Str  `json:"key_id"`
	// Channel is the channel named by POST /channel_self (setChannel).
	Channel Str `json:"channel"`
}

// ErrBadRequest is wrapped by every parse error of this package.
var ErrBadRequest = errors.New("capgo: bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
}

// ParseInfo decodes and checks an info object. It requires app_id and
// device_id, bounds every field, and accepts unknown fields.
func ParseInfo(body []byte) (*Info, error) {
	in := new(Info)
	if err := ParseInfoInto(body, in); err != nil {
		return nil, err
	}
	return in, nil
}

// Validate checks the fields every endpoint needs: app_id a valid app ID,
// device_id present, and every field within its bound.
func (in *Info) Validate() error {
	if in.AppID == "" || in.DeviceID == "" {
		return badRequest("app_id and device_id are required")
	}
	if err := release.ValidateApp(string(in.AppID)); err != nil {
		return badRequest("app_id: %v", err)
	}
	if len(in.DeviceID) > MaxDeviceIDLen {
		return badRequest("device_id is over %d bytes", MaxDeviceIDLen)
	}
	fields := [...]Str{in.Platform, in.CustomID, in.VersionBuild, in.VersionCode, in.VersionOS, in.VersionName,
		in.PluginVersion, in.InstallSource, in.DefaultChannel, in.KeyID, in.Channel}
	for i, v := range fields {
		if len(v) > MaxFieldLen {
			names := [...]string{"platform", "custom_id", "version_build", "version_code", "version_os", "version_name",
				"plugin_version", "install_source", "defaultChannel", "key_id", "channel"}
			return badRequest("%s is over %d bytes", names[i], MaxFieldLen)
		}
	}
	return nil
}

// InfoFromQuery builds an info object from query parameters: GET
// /channel_self sends every field that way, booleans as "true"/"false".
func InfoFromQuery(q url.Values) (*Info, error) {
	b := func(k string) Bool { return Bool(q.Get(k) == "true") }
	s := func(k string) Str { return Str(q.Get(k)) }
	in := &Info{
		Platform: s("platform"), DeviceID: s("device_id"), AppID: s("app_id"), CustomID: s("custom_id"),
		VersionBuild: s("version_build"), VersionCode: s("version_code"), VersionOS: s("version_os"),
		VersionName: s("version_name"), PluginVersion: s("plugin_version"), IsEmulator: b("is_emulator"),
		IsProd: b("is_prod"), InstallSource: s("install_source"), DefaultChannel: s("defaultChannel"),
		KeyID: s("key_id"), Channel: s("channel"),
	}
	if in.DeviceID == "" {
		// listChannels needs only the app; some callers omit the device.
		in.DeviceID = "-"
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	return in, nil
}

// Stat is one event of POST /stats: the info object plus what happened.
type Stat struct {
	Info
	Action         Str   `json:"action"`
	VersionName    Str   `json:"version_name"`
	OldVersionName Str   `json:"old_version_name"`
	Timestamp      int64 `json:"timestamp"`
}

// ParseStats decodes POST /stats: one event object or an array of them
// (the plugin sends both). Events that are not objects, or lack app_id,
// device_id or action, are dropped and counted rather than failing the
// batch, since the plugin drops a batch that gets a 4xx answer.
func ParseStats(body []byte) (stats []Stat, dropped int, err error) {
	if len(body) > MaxStatsBody {
		return nil, 0, badRequest("stats body of %d bytes is over the limit of %d", len(body), MaxStatsBody)
	}
	body = bytes.TrimSpace(body)
	var raw []json.RawMessage
	switch {
	case len(body) > 0 && body[0] == '{':
		raw = []json.RawMessage{body}
	case len(body) > 0 && body[0] == '[':
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, 0, badRequest("stats body: %v", err)
		}
	default:
		return nil, 0, badRequest("stats body must be a JSON object or array")
	}
	if len(raw) > MaxStatsEvents {
		return nil, 0, badRequest("%d events in one request; the limit is %d", len(raw), MaxStatsEvents)
	}
	stats = make([]Stat, 0, len(raw))
	for _, r := range raw {
		var st Stat
		if json.Unmarshal(r, &st) != nil || st.Validate() != nil || st.Action == "" || len(st.Action) > 64 {
			dropped++
			continue
		}
		stats = append(stats, st)
	}
	return stats, dropped, nil
}

// UpdateAnswer is the answer to POST /updates when an update is available.
// Every field is a string or an array of string-only objects, as the iOS
// decoder (AppVersionDec) requires.
type UpdateAnswer struct {
	Version string `json:"version"`
	// URL is the absolute URL of the full zip; the plugin requires a valid
	// URL even when it downloads the manifest instead.
	URL string `json:"url"`
	// Checksum is the lowercase hex SHA-256 of the plaintext zip, or for an
	// encrypted bundle the hex RSA "private encrypt" of that digest.
	Checksum string `json:"checksum"`
	// SessionKey is "" for a plain bundle, else base64(iv):base64(RSA(key)).
	SessionKey string          `json:"session_key"`
	Manifest   []ManifestEntry `json:"manifest,omitempty"`
}

// ManifestEntry is one file of a manifest (delta) update. A FileName
// ending in ".br" is a Brotli payload the plugin decodes and stores
// without the suffix.
type ManifestEntry struct {
	FileName    string `json:"file_name"`
	FileHash    string `json:"file_hash"`
	DownloadURL string `json:"download_url"`
}

// Refusal is every answer to POST /updates that is not an update: HTTP 200
// with error, message and kind (never "{}", which the plugin counts as a
// failure).
type Refusal struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Kind    string `json:"kind"`
	// Version is the release concerned ("builtin" to send the device back
	// to the bundle inside the app).
	Version string `json:"version,omitempty"`
	// Old is the native version a major jump was refused against.
	Old string `json:"old,omitempty"`
	// Major is set on a refused major jump; the plugin fires majorAvailable.
	Major bool `json:"major,omitempty"`
	// RetryAfterSeconds accompanies a 429 answer.
	RetryAfterSeconds int `json:"retryAfterSeconds,omitempty"`
}

func refuse(kind, code, format string, args ...any) *Refusal {
	return &Refusal{Error: code, Message: fmt.Sprintf(format, args...), Kind: kind}
}

// ChannelListItem is one entry of GET /channel_self's bare array. ID must
// be a number (Android reads it as one).
type ChannelListItem struct {
	ID           int64  `json:"id"`
	Name         string `json:"name"`
	Public       bool   `json:"public"`
	AllowSelfSet bool   `json:"allow_self_set"`
}

// ChannelID is a stable numeric id for a channel, below 2^31 so that any
// JSON reader holds it exactly as an int.
func ChannelID(app, channel string) int64 {
	h := release.Sum([]byte(app + "/" + channel))
	return int64(uint32(h[0])<<23|uint32(h[1])<<15|uint32(h[2])<<7|uint32(h[3])>>1) + 1
}

// pluginAtLeast reports whether plugin version v is at least the given
// minimum for its major (mins indexed by major; majors above the table
// pass, majors below fail). Unparseable versions pass: a plugin too old to
// send a version is rarer than a fork that sends an odd one.
func pluginAtLeast(v string, mins map[uint64]string) bool {
	pv, err := ParseLooseVersion(v)
	if err != nil {
		return true
	}
	var top uint64
	for m := range mins {
		top = max(top, m)
	}
	min, ok := mins[pv.Major()]
	if !ok {
		return pv.Major() > top
	}
	mv, _ := ParseLooseVersion(min)
	return !pv.LessThan(mv)
}

// SupportsBuiltin reports whether a plugin version goes back to the
// bundle inside the app on a {"version":"builtin"} answer: 6.2.0 and
// later, as Capgo's backend decides.
func SupportsBuiltin(pluginVersion string) bool {
	return pluginAtLeast(pluginVersion, map[uint64]string{6: "6.2.0"})
}

// BuiltinAnswer is the answer that sends a device back to the bundle
// inside the app: success-shaped, with no error or kind key. Both plugins
// reset to builtin only on it — Android CapacitorUpdaterPlugin.java and iOS
// CapacitorUpdaterPlugin.swift return from the update check on any error
// or kind key before they look at version == "builtin" (docs/capgo.md).
type BuiltinAnswer struct {
	Version string `json:"version"` // always Builtin
}

// SupportsManifest reports whether a plugin version understands manifest
// (per-file) updates: 5.10.0, 6.25.0, 7.0.35 and every later major.
func SupportsManifest(pluginVersion string) bool {
	return pluginAtLeast(pluginVersion, map[uint64]string{5: "5.10.0", 6: "6.25.0", 7: "7.0.35"})
}

// IsHexSHA256 reports whether s is 64 lowercase hex characters.
func IsHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// lower trims and lower-cases a platform name.
func lower(s Str) string { return strings.ToLower(strings.TrimSpace(string(s))) }
