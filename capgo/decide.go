package capgo

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/capstan-ota/capstan/release"
)

// Values of ChannelFlags.DisableAutoUpdate, Capgo's channel setting of the
// same name: which version jumps (compared with the device's native app
// version, version_build) are refused.
const (
	AutoUpdateMajor    = "major"    // block when release major > native major (the default)
	AutoUpdateMinor    = "minor"    // block unless major and minor equal
	AutoUpdatePatch    = "patch"    // block unless major, minor and patch equal
	AutoUpdateMetadata = "metadata" // block when the release's min native version > native
	AutoUpdateNone     = "none"     // allow every jump
)

// ChannelFlags are the Capgo settings of one channel. The zero value is
// Capgo's default channel: every platform and device class allowed, major
// jumps blocked, releases older than the native app blocked, devices not
// allowed to choose the channel themselves.
type ChannelFlags struct {
	// NoIOS, NoAndroid and NoElectron refuse devices of that platform.
	NoIOS      bool `json:"no_ios,omitempty"`
	NoAndroid  bool `json:"no_android,omitempty"`
	NoElectron bool `json:"no_electron,omitempty"`
	// NoProd refuses store builds (is_prod true); NoDev refuses debug,
	// TestFlight and ad-hoc builds (is_prod false).
	NoProd bool `json:"no_prod,omitempty"`
	NoDev  bool `json:"no_dev,omitempty"`
	// NoEmulator refuses emulators and simulators; NoDevice refuses
	// physical devices.
	NoEmulator bool `json:"no_emulator,omitempty"`
	NoDevice   bool `json:"no_device,omitempty"`
	// DisableAutoUpdate is one of the AutoUpdate… values; "" means major.
	DisableAutoUpdate string `json:"disable_auto_update,omitempty"`
	// AllowUnderNative offers releases whose version is below the native
	// app's version (Capgo's disable_auto_update_under_native=false).
	AllowUnderNative bool `json:"allow_under_native,omitempty"`
	// SelfAssign lets devices choose this channel (setChannel), Capgo's
	// allow_device_self_set.
	SelfAssign bool `json:"self_assign,omitempty"`
}

// Validate checks the enumerated field.
func (f *ChannelFlags) Validate() error {
	switch f.DisableAutoUpdate {
	case "", AutoUpdateMajor, AutoUpdateMinor, AutoUpdatePatch, AutoUpdateMetadata, AutoUpdateNone:
		return nil
	}
	return fmt.Errorf("capgo: disable_auto_update %q: want major, minor, patch, metadata or none", f.DisableAutoUpdate)
}

// AppConfig is the Capgo configuration of one app, stored on the origin
// and cached by edges. It is small: a default channel and the flags of the
// channels that differ from the defaults.
type AppConfig struct {
	// DefaultChannel is the channel devices follow when they name none (or
	// name one they may not use); "" means the edge's configured default.
	DefaultChannel string `json:"default_channel,omitempty"`
	// Channels holds per-channel flags; a channel not listed has the zero
	// ChannelFlags.
	Channels map[string]ChannelFlags `json:"channels,omitempty"`
}

// MaxChannelConfigs bounds the channels of one AppConfig.
const MaxChannelConfigs = 1000

// Validate checks names and flags.
func (c *AppConfig) Validate() error {
	if c.DefaultChannel != "" {
		if err := release.ValidateChannel(c.DefaultChannel); err != nil {
			return fmt.Errorf("capgo: default channel: %w", err)
		}
	}
	if len(c.Channels) > MaxChannelConfigs {
		return fmt.Errorf("capgo: %d channel configs is over the limit of %d", len(c.Channels), MaxChannelConfigs)
	}
	for name, f := range c.Channels {
		if err := release.ValidateChannel(name); err != nil {
			return fmt.Errorf("capgo: %w", err)
		}
		if err := f.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Flags returns a channel's flags (the defaults when not configured).
func (c *AppConfig) Flags(channel string) ChannelFlags {
	if c == nil {
		return ChannelFlags{}
	}
	return c.Channels[channel]
}

// Target is the release a device is offered, with what the rules need to
// know about it.
type Target struct {
	// Ref is the release; a zero ID means the bundle inside the app.
	Ref release.Ref
	// MinNative is the release's minimum native version ("" for any).
	MinNative string
	// KeyID is the key_id of the release's Capgo encryption ("" when the
	// release is not encrypted).
	KeyID string
	// Failed is true when the device reported update_fail for it.
	Failed bool
}

// Rules are the per-offer inputs beyond the device's info object.
type Rules struct {
	Channel string
	Flags   ChannelFlags
	// BlockMajor forces the major rule whatever Flags says (a Capstan
	// channel's own block-major setting).
	BlockMajor bool
}

// Check applies Capgo's update rules, in Capgo's order, to an offer of t
// to the device described by in. It returns nil when the update may be
// sent — for the bundle inside the app (a zero t.Ref.ID), when the device
// may be sent back to it with a BuiltinAnswer. The order matters for what
// the device hears: a device already on the release hears "up to date"
// even on a channel closed to it.
func Check(in *Info, t Target, r Rules) *Refusal {
	name := string(in.VersionName)
	builtin := t.Ref.ID.IsZero()
	// key_id: a device holding a key cannot take a plain bundle (iOS always
	// RSA-decrypts the checksum), and a device without one cannot decrypt.
	if !builtin && name != t.Ref.Version && t.KeyID != string(in.KeyID) {
		switch {
		case t.KeyID == "":
			return refuse(KindBlocked, CodeKeyIDMismatch, "release %s is not encrypted, but the app has an encryption key (key_id %s): upload it with capstan upload --capgo-key", t.Ref.Version, in.KeyID)
		case in.KeyID == "":
			return refuse(KindBlocked, CodeKeyIDMismatch, "release %s is encrypted with key %s, but the app has no public key", t.Ref.Version, t.KeyID)
		default:
			return refuse(KindBlocked, CodeKeyIDMismatch, "release %s is encrypted with key %s, the app holds key %s", t.Ref.Version, t.KeyID, in.KeyID)
		}
	}
	if builtin && (name == Builtin || name == "") {
		return refuse(KindUpToDate, CodeAlreadyOnBuiltin, "Already on builtin")
	}
	if !builtin && name == t.Ref.Version {
		return refuse(KindUpToDate, CodeNoNewVersion, "No new version available")
	}
	switch p := lower(in.Platform); {
	case p == "ios" && r.Flags.NoIOS, p == "android" && r.Flags.NoAndroid, p == "electron" && r.Flags.NoElectron:
		return refuse(KindBlocked, CodeDisablePlatform+p, "channel %s is closed to %s devices", r.Channel, p)
	}
	if !builtin {
		if ref := checkVersions(in, t, r); ref != nil {
			return ref
		}
	}
	switch {
	case bool(in.IsProd) && r.Flags.NoProd:
		return refuse(KindBlocked, CodeDisableProdBuild, "channel %s is closed to production builds", r.Channel)
	case !bool(in.IsProd) && r.Flags.NoDev:
		return refuse(KindBlocked, CodeDisableDevBuild, "channel %s is closed to development builds", r.Channel)
	case bool(in.IsEmulator) && r.Flags.NoEmulator:
		return refuse(KindBlocked, CodeDisableEmulator, "channel %s is closed to emulators", r.Channel)
	case !bool(in.IsEmulator) && r.Flags.NoDevice:
		return refuse(KindBlocked, CodeDisableDevice, "channel %s is closed to physical devices", r.Channel)
	}
	if builtin {
		if !SupportsBuiltin(string(in.PluginVersion)) {
			return refuse(KindFailed, CodeBuiltinTooOld, "channel %s serves the bundle inside the app, which plugin %s cannot go back to (6.2.0 or later can)", r.Channel, in.PluginVersion)
		}
		return nil
	}
	if t.Failed {
		return refuse(KindBlocked, CodeFailedOnDevice, "release %s failed on this device (update_fail); it is not offered to it again: publish a new version", t.Ref.Version)
	}
	return nil
}

// checkVersions applies the version rules that compare the release with
// the native app version (version_build).
func checkVersions(in *Info, t Target, r Rules) *Refusal {
	mode := r.Flags.DisableAutoUpdate
	if mode == "" {
		mode = AutoUpdateMajor
	}
	if r.BlockMajor && mode == AutoUpdateNone {
		mode = AutoUpdateMajor
	}
	needNative := mode != AutoUpdateNone || !r.Flags.AllowUnderNative || t.MinNative != ""
	if !needNative {
		return nil
	}
	vb := strings.TrimSpace(string(in.VersionBuild))
	if vb == "" || strings.EqualFold(vb, "unknown") {
		return refuse(KindFailed, CodeUnknownVersionBuild, "the device did not send its native version (version_build)")
	}
	native, err := ParseLooseVersion(vb)
	if err != nil {
		return refuse(KindFailed, CodeSemverError, "version_build %q is not a version", vb)
	}
	tv, err := ParseLooseVersion(t.Ref.Version)
	if err != nil {
		return refuse(KindFailed, CodeSemverError, "release version %q is not semver", t.Ref.Version)
	}
	switch mode {
	case AutoUpdateMajor:
		if tv.Major() > native.Major() {
			ref := refuse(KindBlocked, CodeDisableMajor, "Cannot upgrade major version")
			ref.Major, ref.Version, ref.Old = true, t.Ref.Version, vb
			return ref
		}
	case AutoUpdateMinor:
		if tv.Major() != native.Major() || tv.Minor() != native.Minor() {
			return refuse(KindBlocked, CodeDisableMinor, "Cannot upgrade minor version")
		}
	case AutoUpdatePatch:
		if tv.Major() != native.Major() || tv.Minor() != native.Minor() || tv.Patch() != native.Patch() {
			return refuse(KindBlocked, CodeDisablePatch, "Cannot upgrade patch version")
		}
	case AutoUpdateMetadata:
		if t.MinNative == "" {
			return refuse(KindFailed, CodeMisconfigured, "channel %s blocks by minimum native version, but release %s has none (upload with --min-native)", r.Channel, t.Ref.Version)
		}
	}
	if t.MinNative != "" {
		if min, err := ParseLooseVersion(t.MinNative); err == nil && native.LessThan(min) {
			code := CodeDisableUnderNative
			if mode == AutoUpdateMetadata {
				code = CodeDisableMetadata
			}
			return refuse(KindBlocked, code, "release %s needs native version %s or later; the device runs %s", t.Ref.Version, t.MinNative, vb)
		}
	}
	if !r.Flags.AllowUnderNative && tv.LessThan(native) {
		return refuse(KindBlocked, CodeDisableUnderNative, "release %s is older than the native app %s", t.Ref.Version, vb)
	}
	return nil
}

var leadingVersion = regexp.MustCompile(`^[vV]?(\d+)(\.\d+)?(\.\d+)?(.*)$`)

// ParseLooseVersion parses a version the way Capgo fixes up native
// versions: a leading "v" is dropped and missing minor or patch parts are
// taken as 0 ("2" → 2.0.0, "2.3" → 2.3.0).
func ParseLooseVersion(v string) (*semver.Version, error) {
	v = strings.TrimSpace(v)
	if len(v) > release.MaxVersionLen {
		return nil, fmt.Errorf("capgo: version %q is too long", v)
	}
	m := leadingVersion.FindStringSubmatch(v)
	if m == nil {
		return nil, fmt.Errorf("capgo: version %q is not semver", v)
	}
	minor, patch := m[2], m[3]
	if minor == "" {
		minor = ".0"
	}
	if patch == "" {
		patch = ".0"
	}
	sv, err := semver.StrictNewVersion(m[1] + minor + patch + m[4])
	if err != nil {
		return nil, fmt.Errorf("capgo: version %q: %w", v, err)
	}
	return sv, nil
}
