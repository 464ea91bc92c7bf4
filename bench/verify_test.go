package bench

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// TestSimulatedDevicesJudgeAnswersLikeDevices: the bench's devices apply
// the reference device's rules to a check answer (device.AnswerCheck)
// rather than a subset of their own: a release whose minimum native
// version is above the fleet's is refused although the edge says
// "update", an older record is a replay, and a record of another channel,
// or one no trusted key signed, is refused.
func TestSimulatedDevicesJudgeAnswersLikeDevices(t *testing.T) {
	originKey, _ := release.GenerateKey()
	ciKey, _ := release.GenerateKey()
	b := &Bench{cfg: Config{App: "com.x", Channel: "production", NativeVersion: "1.0.0",
		Keys: []release.PublicKey{
			{Key: originKey.Public().(ed25519.PublicKey), Role: release.RoleOrigin},
			{Key: ciKey.Public().(ed25519.PublicKey), Role: release.RoleRelease},
		}}, rels: map[release.Hash]*relInfo{}}
	signedRelease := func(version, minNative string) *release.Envelope {
		m := &release.Manifest{Type: release.TypeRelease, App: "com.x", Version: version, MinNative: minNative,
			Files: []release.File{{Path: "index.html", Size: 1, Mode: 0o644, SHA256: release.Sum([]byte(version))}}}
		b, err := m.Encode() // format 1: the list travels in the answer, no edge needed
		if err != nil {
			t.Fatal(err)
		}
		return release.Seal(b, ciKey)
	}
	answer := func(channel string, seq uint64, rel *release.Envelope, key ed25519.PrivateKey) *wire.CheckAnswer {
		now := time.Now()
		c := &release.Channel{Type: release.TypeChannel, App: "com.x", Channel: channel, Seq: seq,
			Release: release.Ref{Version: "1.1.0", ID: rel.ID()}, RolloutBPS: release.FullRollout, Issued: now, Expires: now.Add(time.Hour)}
		if d, _, err := rel.Release(); err == nil {
			c.Release.Version = d.Version
		}
		cb, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return &wire.CheckAnswer{Status: wire.StatusUpdate, Channel: release.Seal(cb, key), Release: rel}
	}
	ctx := context.Background()
	d := &simDevice{id: "dev-1"}

	if ri, blocked, err := b.verifyAnswer(ctx, d, answer("production", 5, signedRelease("1.1.0", "2.0.0"), originKey)); err != nil || ri != nil || !blocked {
		t.Fatalf("release needing native 2.0.0 on a 1.0.0 fleet: %v, blocked %v, err %v; want refused", ri, blocked, err)
	}
	ri, blocked, err := b.verifyAnswer(ctx, d, answer("production", 6, signedRelease("1.1.0", ""), originKey))
	if err != nil || ri == nil || blocked || ri.ref.Version != "1.1.0" {
		t.Fatalf("a good answer: %v, blocked %v, err %v", ri, blocked, err)
	}
	for name, ans := range map[string]*wire.CheckAnswer{
		"replay":        answer("production", 5, signedRelease("1.1.0", ""), originKey),
		"other channel": answer("beta", 7, signedRelease("1.1.0", ""), originKey),
		"untrusted key": answer("production", 7, signedRelease("1.1.0", ""), ciKey),
	} {
		if _, _, err := b.verifyAnswer(ctx, d, ans); !errors.Is(err, ErrVerify) {
			t.Errorf("%s: err %v, want ErrVerify", name, err)
		}
	}
}
