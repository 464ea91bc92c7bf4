package release

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// TypeRotation is the document type of a key rotation statement.
const TypeRotation = "capstan.rotation/v1"

// Bounds on rotation statements (cf. go-tuf's MaxRootRotations).
const (
	// MaxRotationBytes bounds one encoded statement or its envelope.
	MaxRotationBytes = 4096
	// MaxRotations bounds a chain of statements a device applies at once.
	MaxRotations = 32
)

// Rotation introduces a new key for a role and retires an old one. It is
// valid when signed by the old key. A rotation of the origin key may
// instead be signed by a trusted release key; it then replaces every
// origin key the device trusts, which is how a device recovers when the
// origin's online key is stolen: the thief holds the old origin key (and
// may even have rotated it to a key of their own), but not the release key
// kept in CI.
type Rotation struct {
	Type string `json:"type"`
	// Role is RoleRelease or RoleOrigin.
	Role string `json:"role"`
	// App, for a release key, names the app whose key rotates; the origin
	// uses it to update the app's registered keys. Devices ignore it.
	App string `json:"app,omitempty"`
	// Old is the key ID of the retired key.
	Old string `json:"old"`
	// New is the new ed25519 public key.
	New ed25519.PublicKey `json:"new"`
	// Issued is informational.
	Issued time.Time `json:"issued"`
}

// Errors of rotation statements.
var (
	// ErrRotation wraps every refused rotation statement.
	ErrRotation = errors.New("release: key rotation refused")
)

// Validate checks the statement's fields.
func (r *Rotation) Validate() error {
	if r.Type != TypeRotation {
		return invalid("rotation type %q", r.Type)
	}
	if r.Role != RoleRelease && r.Role != RoleOrigin {
		return invalid("rotation role %q: want %s or %s", r.Role, RoleRelease, RoleOrigin)
	}
	if r.App != "" {
		if err := ValidateApp(r.App); err != nil {
			return err
		}
	}
	if len(r.Old) != 16 {
		return invalid("rotation: old key id %q is not 16 hex characters", r.Old)
	}
	if len(r.New) != ed25519.PublicKeySize {
		return invalid("rotation: new key is %d bytes, want %d", len(r.New), ed25519.PublicKeySize)
	}
	if KeyID(r.New) == r.Old {
		return invalid("rotation: the new key is the old key")
	}
	return nil
}

// NewRotation makes a signed statement that replaces old with newKey for
// role, signed by old (and by any extra keys, e.g. a release key that
// co-signs an origin rotation).
func NewRotation(role, app string, old ed25519.PrivateKey, newKey ed25519.PublicKey, now time.Time, extra ...ed25519.PrivateKey) (*Envelope, error) {
	r := Rotation{Type: TypeRotation, Role: role, App: app, Old: KeyID(old.Public().(ed25519.PublicKey)), New: newKey, Issued: now.UTC()}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(&r)
	if err != nil {
		return nil, fmt.Errorf("release: encode rotation: %w", err)
	}
	return Seal(b, append([]ed25519.PrivateKey{old}, extra...)...), nil
}

// DecodeRotation parses and validates a rotation statement's signed bytes.
func DecodeRotation(b []byte) (*Rotation, error) {
	if len(b) > MaxRotationBytes {
		return nil, invalid("rotation of %d bytes is over the limit", len(b))
	}
	var r Rotation
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, invalid("rotation: %v", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Rotation decodes the envelope's signed bytes as a rotation statement.
func (e *Envelope) Rotation() (*Rotation, error) { return DecodeRotation(e.Signed) }

// ApplyRotation checks one statement against the trusted keys and returns
// the new trusted set: the old key out, the new key in with the statement's
// role. applied is false (and the set unchanged) when the statement is
// already in effect. The input slice is not modified.
func ApplyRotation(trusted []PublicKey, env *Envelope) (out []PublicKey, r *Rotation, applied bool, err error) {
	r, err = env.Rotation()
	if err != nil {
		return trusted, nil, false, fmt.Errorf("%w: %v", ErrRotation, err)
	}
	has := func(id, role string) int {
		return slices.IndexFunc(trusted, func(k PublicKey) bool {
			return KeyID(k.Key) == id && (k.Role == "" || k.Role == role)
		})
	}
	if r.Role == RoleOrigin && env.Verify(KeysFor(trusted, RoleRelease)) == nil {
		// Recovery: a release key vouches for the new origin key, which
		// replaces every origin key, whoever holds the old one now.
		out = make([]PublicKey, 0, len(trusted)+1)
		changed := false
		for _, k := range trusted {
			switch {
			case k.Role == RoleOrigin && k.Key.Equal(r.New):
				continue
			case k.Role == RoleOrigin:
				changed = true
				continue
			case k.Role == "":
				k.Role = RoleRelease
			}
			out = append(out, k)
		}
		out = append(out, PublicKey{Key: r.New, Role: RoleOrigin})
		if !changed && has(KeyID(r.New), RoleOrigin) >= 0 {
			return trusted, r, false, nil
		}
		return out, r, true, nil
	}
	oldIdx := has(r.Old, r.Role)
	if oldIdx < 0 {
		if has(KeyID(r.New), r.Role) >= 0 {
			return trusted, r, false, nil // already applied
		}
		return trusted, r, false, fmt.Errorf("%w: %s key %s is not trusted here", ErrRotation, r.Role, r.Old)
	}
	if err := env.Verify([]ed25519.PublicKey{trusted[oldIdx].Key}); err != nil {
		return trusted, r, false, fmt.Errorf("%w: %s key %s → %s: %w", ErrRotation, r.Role, r.Old, KeyID(r.New), err)
	}
	out = make([]PublicKey, 0, len(trusted)+1)
	for i, k := range trusted {
		if i == oldIdx {
			if k.Role == "" {
				// A key trusted for every role keeps its other role.
				other := RoleRelease
				if r.Role == RoleRelease {
					other = RoleOrigin
				}
				out = append(out, PublicKey{Key: k.Key, Role: other})
			}
			continue
		}
		out = append(out, k)
	}
	if has(KeyID(r.New), r.Role) < 0 {
		out = append(out, PublicKey{Key: r.New, Role: r.Role})
	}
	return out, r, true, nil
}

// ApplyRotations applies a chain of statements in whatever order they come,
// repeating until none applies, so a device that missed several rotations
// catches up in one pass. Statements that do not apply (for another app's
// key, or already in effect) are skipped; one that names a trusted key but
// fails its signature check is an error. It reports the statements applied.
func ApplyRotations(trusted []PublicKey, envs []*Envelope) ([]PublicKey, []*Rotation, error) {
	if len(envs) > MaxRotations {
		return trusted, nil, fmt.Errorf("%w: %d statements, limit %d", ErrRotation, len(envs), MaxRotations)
	}
	done := make([]bool, len(envs))
	var applied []*Rotation
	for progress := true; progress; {
		progress = false
		for i, env := range envs {
			if done[i] {
				continue
			}
			next, r, ok, err := ApplyRotation(trusted, env)
			if err != nil {
				if r != nil && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrUnsigned) {
					continue // names a key we do not hold (yet)
				}
				return trusted, applied, err
			}
			done[i] = true
			if ok {
				trusted = next
				applied = append(applied, r)
				progress = true
			}
		}
	}
	return trusted, applied, nil
}
