package origin

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestMistypedChannelIsNotCreated: `--channel prodution` made a new channel
// and shipped to it (issue 17, item 6). A channel the app does not have is
// refused with the closest name, unless the app has none yet (its first
// upload) or the caller says --new-channel.
func TestMistypedChannelIsNotCreated(t *testing.T) {
	s, _ := newTestServer(t, nil)
	upload := func(version, channel string, create bool) error {
		req, z := signedUpload(t, "app", version, nil)
		req.Channel, req.NewChannel = channel, create
		_, err := s.Upload(context.Background(), req, bytes.NewReader(z))
		return err
	}
	if err := upload("1.0.0", "production", false); err != nil {
		t.Fatalf("an app's first channel needs no flag: %v", err)
	}
	err := upload("1.0.1", "prodution", false)
	if !errors.Is(err, ErrNoChannel) || !strings.Contains(err.Error(), `did you mean "production"?`) || !strings.Contains(err.Error(), "--new-channel") {
		t.Fatalf("mistyped channel: %v", err)
	}
	if names, _ := s.st.channelNames("app"); len(names) != 1 {
		t.Fatalf("channels after a refused typo: %v", names)
	}
	if _, err := s.st.release("app", "1.0.1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused upload stored a release: %v", err)
	}
	if err := upload("1.0.1", "beta", true); err != nil {
		t.Fatalf("--new-channel: %v", err)
	}
	// The same rule for channel set and promote.
	if _, err := s.SetChannel(ChannelRequest{App: "app", Channel: "bta", Version: "1.0.0", RolloutBPS: -1}); !errors.Is(err, ErrNoChannel) || !strings.Contains(err.Error(), `"beta"`) {
		t.Fatalf("channel set on a mistyped channel: %v", err)
	}
	if _, err := s.Promote("app", "beta", "prodction", -1, false); !errors.Is(err, ErrNoChannel) {
		t.Fatalf("promote to a mistyped channel: %v", err)
	}
	if _, err := s.Promote("app", "beta", "staging", -1, true); err != nil {
		t.Fatalf("promote --new-channel: %v", err)
	}
}

func TestClosestChannel(t *testing.T) {
	have := []string{"beta", "production", "staging"}
	for name, want := range map[string]string{
		"prodution": "production", "Production": "production", "beat": "beta", "stagin": "staging",
		"nightly": "", "qa": "",
	} {
		if got := closest(name, have); got != want {
			t.Errorf("closest(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestChannelSetNoChangeSignsNothing: `channel set` that asks for what the
// channel already says re-signed the record (a new seq every edge and
// device then moved to). Now it signs nothing and says so.
func TestChannelSetNoChangeSignsNothing(t *testing.T) {
	s, _ := newTestServer(t, nil)
	req, z := signedUpload(t, "app", "1.0.0", nil)
	req.Channel = "production"
	if _, err := s.Upload(context.Background(), req, bytes.NewReader(z)); err != nil {
		t.Fatal(err)
	}
	_, before, _ := s.st.channel("app", "production")
	yes := true
	for _, r := range []ChannelRequest{
		{App: "app", Channel: "production", Version: "1.0.0", RolloutBPS: -1},
		{App: "app", Channel: "production", RolloutBPS: 10000},
		{App: "app", Channel: "production", RolloutBPS: -1, Default: &yes},
		{App: "app", Channel: "production", RolloutBPS: -1},
	} {
		env, changed, err := s.SetChannelChanged(r)
		if err != nil || changed {
			t.Fatalf("%+v: changed %v, %v", r, changed, err)
		}
		if c, _ := env.Channel(); c.Seq != before.Seq {
			t.Fatalf("%+v: seq %d → %d", r, before.Seq, c.Seq)
		}
	}
	env, changed, err := s.SetChannelChanged(ChannelRequest{App: "app", Channel: "production", RolloutBPS: 5000})
	if c, _ := env.Channel(); err != nil || !changed || c.Seq <= before.Seq || c.RolloutBPS != 5000 {
		t.Fatalf("a real change: changed %v, %+v, %v", changed, c, err)
	}
}
