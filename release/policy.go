package release

import (
	"fmt"
	"slices"
)

// Codes of the version rules that stop a release from being offered. The
// names follow Capgo's error codes where Capgo has one, so a Capgo-style
// answer can carry them unchanged.
const (
	// BlockUnderNative: the release needs a newer native app (MinNative).
	BlockUnderNative = "disable_auto_update_under_native"
	// BlockMajor: the release's major version is above the native app's
	// major version and the channel blocks major jumps.
	BlockMajor = "disable_auto_update_to_major"
	// BlockDowngrade: the release is older than what the device runs and
	// the channel record is not a rollback.
	BlockDowngrade = "disable_downgrade"
	// BlockFailed: the release failed on this device before.
	BlockFailed = "failed_on_device"
)

// OfferCheck is what the version rules know about one offer: the signed
// document of the release on offer (nil for the bundle built into the app), the
// version the device runs ("" for the built-in bundle or unknown), the
// device's native app version ("" if unknown) and the releases that failed
// on the device.
type OfferCheck struct {
	Release        *Doc
	Target         Ref
	CurrentVersion string
	Native         string
	Failed         []Hash
}

// Refusal says why a release is not offered: a stable Code and a sentence
// for people.
type Refusal struct {
	Code   string
	Reason string
}

// CheckOffer applies the channel's version rules to an offer. It returns
// nil when the release may be offered. Edges and devices run the same
// rules: the edge to answer "blocked" without sending a manifest, the
// device because it trusts no edge.
func (c *Channel) CheckOffer(o OfferCheck) *Refusal {
	if !o.Target.ID.IsZero() && slices.Contains(o.Failed, o.Target.ID) {
		return &Refusal{BlockFailed, fmt.Sprintf("release %s failed on this device before; it is not offered again", o.Target.Version)}
	}
	if o.Target.ID.IsZero() {
		if c.Rollback {
			return nil
		}
		return &Refusal{BlockDowngrade, "the built-in bundle is offered only by a rollback"}
	}
	if m := o.Release; m != nil && m.MinNative != "" {
		min, err := ParseVersion(m.MinNative)
		if err == nil {
			nv, nerr := ParseVersion(o.Native)
			switch {
			case nerr != nil:
				return &Refusal{BlockUnderNative, fmt.Sprintf("release %s needs native version %s or later; the device did not say its native version", m.Version, m.MinNative)}
			case nv.LessThan(min):
				return &Refusal{BlockUnderNative, fmt.Sprintf("release %s needs native version %s or later, the device runs %s", m.Version, m.MinNative, o.Native)}
			}
		}
	}
	// The target's version is parsed only when a rule needs it: most
	// checks (no current version, no major rule) skip the cost.
	needVersion := c.BlockMajor || (o.CurrentVersion != "" && !c.Rollback)
	if !needVersion {
		return nil
	}
	tv, err := ParseVersion(o.Target.Version)
	if err != nil {
		return &Refusal{BlockDowngrade, fmt.Sprintf("release version %q is not semver", o.Target.Version)}
	}
	if c.BlockMajor {
		nv, err := ParseVersion(o.Native)
		switch {
		case err != nil:
			return &Refusal{BlockMajor, fmt.Sprintf("channel %s blocks major updates and the device did not say its native version", c.Channel)}
		case tv.Major() > nv.Major():
			return &Refusal{BlockMajor, fmt.Sprintf("release %s is a new major version for native app %s: ship a store update first", o.Target.Version, o.Native)}
		}
	}
	if o.CurrentVersion != "" && !c.Rollback {
		if cv, err := ParseVersion(o.CurrentVersion); err == nil && tv.LessThan(cv) {
			return &Refusal{BlockDowngrade, fmt.Sprintf("release %s is older than %s, which the device runs; only a rollback moves devices back", o.Target.Version, o.CurrentVersion)}
		}
	}
	return nil
}

// Selectable reports whether a device may ask for this channel by name:
// the app's default channel, or one that lets devices choose it.
func (c *Channel) Selectable() bool { return c.Default || c.DeviceSelect }
