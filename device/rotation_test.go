package device_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/device"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

func trusts(d *device.Device, k ed25519.PublicKey, role string) bool {
	for _, t := range d.TrustedKeys() {
		if t.Key.Equal(k) && t.Role == role {
			return true
		}
	}
	return false
}

// A new release key, introduced by a statement signed with the old one,
// is followed by devices that shipped with the old key only.
func TestRotateReleaseKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	pem, _ := release.EncodePublicKey(c.releaseKey.Public().(ed25519.PublicKey), release.RoleRelease)
	if _, err := c.origin.SetApp(testApp, wire.AppSettings{AddReleaseKeys: []string{string(pem)}}); err != nil {
		t.Fatal(err)
	}
	next, _ := release.GenerateKey()
	stmt, err := release.NewRotation(release.RoleRelease, testApp, c.releaseKey, next.Public().(ed25519.PublicKey), c.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.origin.AddReleaseRotation(stmt); err != nil {
		t.Fatal(err)
	}
	old := c.releaseKey
	c.upload("2.0.0", v2Files, uploadOpts{key: next})
	res := d.Update(context.Background())
	if res.Status != device.StatusUpdated || res.To != "2.0.0" {
		t.Fatalf("%+v", res)
	}
	sameTree(t, dir, v2Files)
	if !trusts(d, next.Public().(ed25519.PublicKey), release.RoleRelease) || trusts(d, old.Public().(ed25519.PublicKey), release.RoleRelease) {
		t.Fatal("device did not move its trust from the old key to the new one")
	}
	// The retired key no longer signs anything the device accepts, even
	// after a restart (the trusted set lives in the device's state).
	// (The origin itself refuses the retired key; the test lifts that to
	// model a release that reaches the edge anyway.)
	if _, err := c.origin.SetApp(testApp, wire.AppSettings{RemoveReleaseKeys: []string{release.KeyID(next.Public().(ed25519.PublicKey))}}); err != nil {
		t.Fatal(err)
	}
	c.upload("3.0.0", map[string]string{"index.html": "v3"}, uploadOpts{key: old})
	d2, _ := c.device(devOpts{dir: dir})
	mustFail(t, d2.Update(context.Background()), "not signed by a trusted key", dir, v2Files)
}

// The origin rotates its own key; devices follow the statement signed by
// the old one.
func TestRotateOriginKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	oldPub := c.origin.PublicKey()
	if _, err := c.origin.RotateKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.upload("2.0.0", v2Files, uploadOpts{})
	res := d.Update(context.Background())
	if res.Status != device.StatusUpdated {
		t.Fatalf("%+v", res)
	}
	sameTree(t, dir, v2Files)
	if !trusts(d, c.origin.PublicKey(), release.RoleOrigin) || trusts(d, oldPub, release.RoleOrigin) {
		t.Fatal("device trust did not follow the origin key")
	}
}

// #7 Fast-forward and stolen origin key: a thief of the origin key pushes
// a record with a huge sequence number and even rotates the origin key to
// one of their own. The operator rotates the origin key with a statement
// co-signed by the release key; devices recover and update again.
func TestRecoverFromStolenOriginKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	stolen := c.originPrivateKey()
	thief, _ := release.GenerateKey()
	thiefRot, _ := release.NewRotation(release.RoleOrigin, "", stolen, thief.Public().(ed25519.PublicKey), c.clock.Now())
	c.proxy.set(func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/v1/keys/rotations":
			writeJSON(w, map[string]any{"rotations": []*release.Envelope{thiefRot}})
			return true
		case "/v1/check":
			var a wire.CheckAnswer
			json.Unmarshal(c.proxy.fetch(r.URL.RequestURI()), &a)
			ch, _ := a.Channel.Channel()
			ch.Seq = math.MaxUint64 - 1
			b, _ := ch.Encode()
			a.Channel = release.Seal(b, thief) // signed by the thief's rotated key
			writeJSON(w, &a)
			return true
		}
		return false
	})
	if res := d.Update(context.Background()); res.Status != device.StatusUpToDate {
		t.Fatalf("during the attack: %+v", res)
	}
	if !trusts(d, thief.Public().(ed25519.PublicKey), release.RoleOrigin) {
		t.Fatal("the attack did not take hold; the test proves nothing")
	}
	// The operator notices, and rotates with the release key co-signing.
	c.proxy.set(nil)
	if _, err := c.origin.RotateKey(context.Background(), c.releaseKey); err != nil {
		t.Fatal(err)
	}
	c.clock.Advance(time.Second)
	c.upload("2.0.0", v2Files, uploadOpts{})
	res := d.Update(context.Background())
	if res.Status != device.StatusUpdated || res.To != "2.0.0" {
		t.Fatalf("after recovery: %+v", res)
	}
	sameTree(t, dir, v2Files)
	if trusts(d, thief.Public().(ed25519.PublicKey), release.RoleOrigin) || trusts(d, stolen.Public().(ed25519.PublicKey), release.RoleOrigin) {
		t.Fatal("device still trusts a compromised origin key")
	}
}

// A rotation statement not signed by the key it retires is ignored.
func TestForgedRotationIgnored(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	d, dir := installV1(t, c, devOpts{})
	attacker, _ := release.GenerateKey()
	// Claim to retire the real release key, signed by the attacker.
	r := release.Rotation{Type: release.TypeRotation, Role: release.RoleRelease, Old: release.KeyID(c.releaseKey.Public().(ed25519.PublicKey)), New: attacker.Public().(ed25519.PublicKey)}
	nb, _ := json.Marshal(&r)
	forged := release.Seal(nb, attacker)
	c.proxy.set(func(w http.ResponseWriter, req *http.Request) bool {
		if req.URL.Path == "/v1/keys/rotations" {
			writeJSON(w, map[string]any{"rotations": []*release.Envelope{forged}})
			return true
		}
		return false
	})
	c.upload("2.0.0", v2Files, uploadOpts{key: attacker})
	mustFail(t, d.Update(context.Background()), "not signed by a trusted key", dir, v1Files)
	if trusts(d, attacker.Public().(ed25519.PublicKey), release.RoleRelease) {
		t.Fatal("device trusts the attacker's key")
	}
}
