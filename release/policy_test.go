package release

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCheckOffer(t *testing.T) {
	id := Sum([]byte("r"))
	other := Sum([]byte("o"))
	m := &Doc{Version: "2.1.0", MinNative: "2.0.0"}
	plain := &Doc{Version: "2.1.0"}
	target := Ref{Version: "2.1.0", ID: id}
	tests := []struct {
		name string
		ch   Channel
		o    OfferCheck
		want string
	}{
		{"allowed", Channel{}, OfferCheck{Release: m, Target: target, CurrentVersion: "2.0.0", Native: "2.0.0"}, ""},
		{"under native", Channel{}, OfferCheck{Release: m, Target: target, Native: "1.9.9"}, BlockUnderNative},
		{"native unknown", Channel{}, OfferCheck{Release: m, Target: target}, BlockUnderNative},
		{"prerelease native sorts below", Channel{}, OfferCheck{Release: m, Target: target, Native: "2.0.0-rc.1"}, BlockUnderNative},
		{"major blocked", Channel{BlockMajor: true}, OfferCheck{Release: plain, Target: target, Native: "1.4.0"}, BlockMajor},
		{"major same", Channel{BlockMajor: true}, OfferCheck{Release: plain, Target: target, Native: "2.0.5"}, ""},
		{"major lower release", Channel{BlockMajor: true}, OfferCheck{Release: plain, Target: target, Native: "3.0.0"}, ""},
		{"major native unknown", Channel{BlockMajor: true}, OfferCheck{Release: plain, Target: target}, BlockMajor},
		{"downgrade", Channel{}, OfferCheck{Release: plain, Target: target, CurrentVersion: "2.2.0"}, BlockDowngrade},
		{"downgrade by rollback", Channel{Rollback: true}, OfferCheck{Release: plain, Target: target, CurrentVersion: "2.2.0"}, ""},
		{"from builtin", Channel{}, OfferCheck{Release: plain, Target: target}, ""},
		{"builtin without rollback", Channel{}, OfferCheck{Target: Ref{}, CurrentVersion: "2.2.0"}, BlockDowngrade},
		{"builtin by rollback", Channel{Rollback: true}, OfferCheck{Target: Ref{}, CurrentVersion: "2.2.0"}, ""},
		{"failed before", Channel{Rollback: true}, OfferCheck{Release: plain, Target: target, Failed: []Hash{other, id}}, BlockFailed},
		{"other failed", Channel{}, OfferCheck{Release: plain, Target: target, Failed: []Hash{other}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.ch.Channel = "production"
			r := tc.ch.CheckOffer(tc.o)
			got := ""
			if r != nil {
				got = r.Code
				if r.Reason == "" {
					t.Fatal("refusal without a reason")
				}
			}
			if got != tc.want {
				t.Fatalf("code %q, want %q (%v)", got, tc.want, r)
			}
		})
	}
}

// TestChannelRecordSize keeps a signed record with every release-management
// flag set within one gossip packet (1 KiB with two signatures) for long
// but realistic names: a 64-character app id, a 32-character channel and
// 32-character versions. The flags cost 71 bytes when all four are set and
// nothing when unset (omitempty).
func TestChannelRecordSize(t *testing.T) {
	v := "1.22.333-beta.4444+build.5555555"
	s := &Ref{Version: v, ID: Sum([]byte("s"))}
	now := time.Now()
	c := Channel{
		Type: TypeChannel, App: strings.Repeat("a", 64), Channel: strings.Repeat("c", 32), Seq: 1 << 62,
		Release: Ref{Version: v, ID: Sum([]byte("r"))}, RolloutBPS: 1234, Stable: s,
		Paused: true, Rollback: true, BlockMajor: true, Default: true, DeviceSelect: true,
		Issued: now, Expires: now.Add(24 * time.Hour),
	}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	env, err := json.Marshal(Seal(b, k1, k2))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("signed record: %d bytes", len(env))
	if len(env) >= 1024 {
		t.Fatalf("signed channel record is %d bytes, want under 1 KiB", len(env))
	}
}

func TestInRolloutSticky(t *testing.T) {
	id := Sum([]byte("release"))
	for i := range 2000 {
		dev := string(rune('a'+i%26)) + string(rune(i))
		for bps := 0; bps < FullRollout; bps += 500 {
			if InRollout(dev, id, bps) && !InRollout(dev, id, bps+500) {
				t.Fatalf("device %q left the rollout when it grew from %d to %d bps", dev, bps, bps+500)
			}
		}
	}
}
