package device

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"

	"github.com/capstan-ota/capstan/release"
)

// pinKeys starts the trusted key set from Config.Keys, or keeps the set
// the device has moved on to by rotations if the app still ships the same
// keys. A new app build with other keys is the new root of trust; a run
// with no keys at all changes nothing (issue 16, finding 6: it used to
// drop the pinned keys, and with them every check).
func (d *Device) pinKeys() {
	if len(d.cfg.Keys) == 0 {
		return
	}
	h := sha256.New()
	for _, k := range d.cfg.Keys {
		h.Write([]byte(k.Role))
		h.Write([]byte{0})
		h.Write(k.Key)
	}
	pin := hex.EncodeToString(h.Sum(nil))
	if d.st.KeysPinned == pin && len(d.st.Keys) > 0 {
		return
	}
	d.st.Keys = slices.Clone(d.cfg.Keys)
	d.st.KeysPinned = pin
}

// TrustedKeys returns the device's current trusted key set.
func (d *Device) TrustedKeys() []release.PublicKey { return slices.Clone(d.st.Keys) }

// maxRotationsBody bounds the answer of /v1/keys/rotations.
const maxRotationsBody = release.MaxRotations*(2*release.MaxRotationBytes) + 1024

// followRotations fetches the edge's key rotation statements and applies
// those that chain from the keys the device trusts. Statements are
// self-authenticating (signed by the key they retire, or for the origin
// key by a release key), so it does not matter that an untrusted edge
// delivers them. It reports whether the trusted set changed.
//
// When the origin key changes, the per-channel sequence numbers the device
// remembers are forgotten: a thief of the old origin key may have pushed
// them to a huge value (fast-forward), and the new key's records must be
// able to start afresh (TUF: delete the trusted timestamp on rotation).
func (d *Device) followRotations(ctx context.Context, edge string) bool {
	if len(d.st.Keys) == 0 {
		return false
	}
	var ans struct {
		Rotations []*release.Envelope `json:"rotations"`
	}
	if err := d.getJSON(ctx, edge, "/v1/keys/rotations", maxRotationsBody, &ans); err != nil {
		return false
	}
	if len(ans.Rotations) > release.MaxRotations {
		ans.Rotations = ans.Rotations[len(ans.Rotations)-release.MaxRotations:]
	}
	next, applied, err := release.ApplyRotations(d.st.Keys, ans.Rotations)
	if len(applied) == 0 {
		_ = err // a bad statement from one edge is that edge's problem
		return false
	}
	d.st.Keys = next
	for _, r := range applied {
		if r.Role == release.RoleOrigin {
			d.st.Seqs = nil
			break
		}
	}
	return true
}
