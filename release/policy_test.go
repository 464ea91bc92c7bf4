package release

import "testing"

func TestCheckOffer(t *testing.T) {
	id := Sum([]byte("r"))
	other := Sum([]byte("o"))
	m := &Manifest{Version: "2.1.0", MinNative: "2.0.0"}
	plain := &Manifest{Version: "2.1.0"}
	target := Ref{Version: "2.1.0", ID: id}
	tests := []struct {
		name string
		ch   Channel
		o    OfferCheck
		want string
	}{
		{"allowed", Channel{}, OfferCheck{Manifest: m, Target: target, CurrentVersion: "2.0.0", Native: "2.0.0"}, ""},
		{"under native", Channel{}, OfferCheck{Manifest: m, Target: target, Native: "1.9.9"}, BlockUnderNative},
		{"native unknown", Channel{}, OfferCheck{Manifest: m, Target: target}, BlockUnderNative},
		{"prerelease native sorts below", Channel{}, OfferCheck{Manifest: m, Target: target, Native: "2.0.0-rc.1"}, BlockUnderNative},
		{"major blocked", Channel{BlockMajor: true}, OfferCheck{Manifest: plain, Target: target, Native: "1.4.0"}, BlockMajor},
		{"major same", Channel{BlockMajor: true}, OfferCheck{Manifest: plain, Target: target, Native: "2.0.5"}, ""},
		{"major lower release", Channel{BlockMajor: true}, OfferCheck{Manifest: plain, Target: target, Native: "3.0.0"}, ""},
		{"major native unknown", Channel{BlockMajor: true}, OfferCheck{Manifest: plain, Target: target}, BlockMajor},
		{"downgrade", Channel{}, OfferCheck{Manifest: plain, Target: target, CurrentVersion: "2.2.0"}, BlockDowngrade},
		{"downgrade by rollback", Channel{Rollback: true}, OfferCheck{Manifest: plain, Target: target, CurrentVersion: "2.2.0"}, ""},
		{"from builtin", Channel{}, OfferCheck{Manifest: plain, Target: target}, ""},
		{"builtin without rollback", Channel{}, OfferCheck{Target: Ref{}, CurrentVersion: "2.2.0"}, BlockDowngrade},
		{"builtin by rollback", Channel{Rollback: true}, OfferCheck{Target: Ref{}, CurrentVersion: "2.2.0"}, ""},
		{"failed before", Channel{Rollback: true}, OfferCheck{Manifest: plain, Target: target, Failed: []Hash{other, id}}, BlockFailed},
		{"other failed", Channel{}, OfferCheck{Manifest: plain, Target: target, Failed: []Hash{other}}, ""},
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

// TestChannelRecordSize keeps the signed record within one gossip packet
// with every field set.
func TestChannelRecordSize(t *testing.T) {
	s := &Ref{Version: "1000.1000.1000-beta.1234567890+build.1234567890", ID: Sum([]byte("s"))}
	c := Channel{
		Type: TypeChannel, App: string(make128('a')), Channel: string(make128('c')), Seq: 1 << 62,
		Release: Ref{Version: s.Version, ID: Sum([]byte("r"))}, RolloutBPS: 1234, Stable: s,
		Paused: true, Rollback: true, BlockMajor: true, Default: true, DeviceSelect: true,
	}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) >= 1024 {
		t.Fatalf("channel record is %d bytes, want under 1 KiB", len(b))
	}
}

func make128(c byte) []byte {
	b := make([]byte, 100)
	for i := range b {
		b[i] = c
	}
	return b
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
