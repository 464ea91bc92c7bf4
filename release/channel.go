package release

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"time"
)

// Ref names a release by version and ID.
type Ref struct {
	Version string `json:"version"`
	ID      Hash   `json:"id"`
	// Sealed, for an encrypted release only, is the hash of its sealed
	// index: the release key sealed to the app's encryption key and the
	// ciphertext blob of each file (see seal.go). The record pins it by
	// hash, so the key arrives as part of what the origin signed, at 75
	// bytes a release: records must fit one gossip packet.
	Sealed Hash `json:"sealed,omitzero"`
}

// Channel is the origin-signed record that says which release a channel
// serves. It is small (well under 1 KiB signed) so that it travels in one
// gossip packet. Seq only grows: a newer record always has a larger Seq, and
// edges and devices never go back to a smaller one.
type Channel struct {
	Type    string `json:"type"`
	App     string `json:"app"`
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	// Release is the release the channel serves to devices in the rollout.
	// A zero Release.ID means "the bundle shipped inside the app".
	Release Ref `json:"release"`
	// RolloutBPS is the share of devices offered Release, in basis points
	// (0–10000). Devices outside get Stable.
	RolloutBPS int `json:"rollout_bps"`
	// Stable is what devices outside the rollout are offered; nil means they
	// are offered nothing and stay where they are.
	Stable *Ref `json:"stable,omitempty"`
	// Paused stops new devices from entering the rollout: only devices that
	// already run Release keep it.
	Paused bool `json:"paused,omitempty"`
	// Rollback marks a record that may move devices to an older version
	// than they run: Rollback sets it, and it stays while the rolled-back-to
	// release is still what the channel falls back to (Stable). Without it
	// edges and devices never offer a release older (semver) than the one a
	// device runs.
	Rollback bool `json:"rollback,omitempty"`
	// BlockMajor refuses to offer a release whose major version is above
	// the device's native app major version (Capgo's
	// disable_auto_update=major): a new major needs a store update.
	BlockMajor bool `json:"block_major,omitempty"`
	// Default marks the app's default channel: the one a device follows
	// when it names none. Devices may always ask for it.
	Default bool `json:"default,omitempty"`
	// DeviceSelect lets devices choose this channel themselves (beta
	// testers, QA). Edges refuse a device that asks for a channel that is
	// neither Default nor DeviceSelect.
	DeviceSelect bool `json:"device_select,omitempty"`
	// Issued and Expires bound the record's freshness. A device treats an
	// expired record as an attack (freeze), not as "no update".
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
}

// FullRollout is 100 % in basis points.
const FullRollout = 10000

// MaxChannelBytes bounds an encoded channel record or its envelope.
const MaxChannelBytes = 4096

// Key is "app/channel", the identity of a channel across the fleet.
func (c *Channel) Key() string { return c.App + "/" + c.Channel }

// Validate checks the record's fields.
func (c *Channel) Validate() error {
	if c.Type != TypeChannel {
		return invalid("channel record type %q", c.Type)
	}
	if err := ValidateApp(c.App); err != nil {
		return err
	}
	if err := ValidateChannel(c.Channel); err != nil {
		return err
	}
	if c.RolloutBPS < 0 || c.RolloutBPS > FullRollout {
		return invalid("rollout %d bps is outside 0–10000", c.RolloutBPS)
	}
	if !c.Release.ID.IsZero() {
		if _, err := ParseVersion(c.Release.Version); err != nil {
			return err
		}
	}
	if c.Stable != nil && !c.Stable.ID.IsZero() {
		if _, err := ParseVersion(c.Stable.Version); err != nil {
			return err
		}
	}
	if c.Expires.Before(c.Issued) {
		return invalid("channel record expires before it is issued")
	}
	return nil
}

// Encode returns the canonical encoding of the record.
func (c *Channel) Encode() ([]byte, error) {
	cc := *c
	cc.Type = TypeChannel
	if err := cc.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(&cc)
}

// DecodeChannel parses and validates a channel record.
func DecodeChannel(b []byte) (*Channel, error) {
	if len(b) > MaxChannelBytes {
		return nil, invalid("channel record of %d bytes is over the limit", len(b))
	}
	var c Channel
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, invalid("channel record: %v", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// InRollout reports whether a device is in the rollout of a release at bps
// basis points. The decision is a hash of device and release, so it is the
// same at every edge and on the device, needs no per-device state, is
// sticky (raising bps only adds devices) and is drawn afresh per release.
func InRollout(deviceID string, release Hash, bps int) bool {
	if bps >= FullRollout {
		return true
	}
	if bps <= 0 {
		return false
	}
	return RolloutBucket(deviceID, release) < uint64(bps)
}

// RolloutBucket is the device's bucket (0–9999) for a release.
func RolloutBucket(deviceID string, release Hash) uint64 {
	h := sha256.New()
	h.Write(release[:])
	h.Write([]byte(deviceID))
	var sum [32]byte
	h.Sum(sum[:0])
	return binary.BigEndian.Uint64(sum[:8]) % FullRollout
}

// Target returns the release a device should run according to this record,
// given the release it runs now. ok is false when the record offers the
// device nothing (it stays where it is).
func (c *Channel) Target(deviceID string, current Hash) (Ref, bool) {
	if current == c.Release.ID && !c.Release.ID.IsZero() {
		return c.Release, true
	}
	if !c.Paused && InRollout(deviceID, c.Release.ID, c.RolloutBPS) {
		return c.Release, true
	}
	if c.Stable != nil {
		return *c.Stable, true
	}
	return Ref{}, false
}
