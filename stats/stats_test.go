package stats

import (
	"fmt"
	"strings"
	"testing"
)

func TestSketchAccuracy(t *testing.T) {
	for _, n := range []int{0, 1, 10, 100, 1000, 10000, 40000, 100000, 300000} {
		var s Sketch
		for i := range n {
			s.Add(fmt.Sprintf("device-%d", i))
			s.Add(fmt.Sprintf("device-%d", i)) // duplicates do not count
		}
		got := float64(s.Estimate())
		tol := 0.03*float64(n) + 1
		if got < float64(n)-tol || got > float64(n)+tol {
			t.Fatalf("n=%d: estimate %v", n, got)
		}
	}
}

func TestSketchMergeAndEncoding(t *testing.T) {
	var a, b Sketch
	for i := range 600 {
		a.Add(fmt.Sprint(i))
	}
	for i := 300; i < 900; i++ {
		b.Add(fmt.Sprint(i))
	}
	enc, _ := a.MarshalBinary()
	var c Sketch
	if err := c.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	c.Merge(&b)
	if e := c.Estimate(); e < 873 || e > 927 {
		t.Fatalf("union of 900 estimated %d", e)
	}
	if err := c.UnmarshalBinary([]byte{1, 2, 3}); err == nil {
		t.Fatal("short sketch accepted")
	}
}

func TestDecodeBatch(t *testing.T) {
	good := `{"action":"install","app":"a","channel":"production","device":"d1","release":"` + strings.Repeat("0", 64) + `"}`
	tests := []struct {
		name          string
		body          string
		n, drop       int
		wantErr       bool
		maxEvents     int
		checkErrorCut bool
	}{
		{name: "array", body: "[" + good + "," + good + "]", n: 2, maxEvents: 10},
		{name: "object", body: good, n: 1, maxEvents: 10},
		{name: "bad events dropped", body: `[` + good + `,{"action":"dance"},{"action":"check","app":"a","channel":"c","device":""},42]`, n: 1, drop: 3, maxEvents: 10},
		{name: "too many", body: "[" + good + "," + good + "]", wantErr: true, maxEvents: 1},
		{name: "malformed", body: "[{", wantErr: true, maxEvents: 10},
		{name: "not an array", body: `"x"`, wantErr: true, maxEvents: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, drop, err := DecodeBatch([]byte(tc.body), tc.maxEvents)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if len(evs) != tc.n || drop != tc.drop {
				t.Fatalf("%d events, %d dropped; want %d, %d", len(evs), drop, tc.n, tc.drop)
			}
		})
	}
	e := Event{Action: ActionFail, App: "a", Channel: "c", Device: "d", Error: strings.Repeat("x", 5000)}
	if err := e.Validate(); err != nil || len(e.Error) != MaxErrorLen {
		t.Fatalf("long error: %v, %d bytes", err, len(e.Error))
	}
}

func TestEventCause(t *testing.T) {
	e := Event{Action: ActionFail, App: "a", Channel: "c", Device: "d", Cause: CauseDownload}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	e.Cause = "cosmic-rays"
	if err := e.Validate(); err == nil {
		t.Fatal("unknown cause accepted")
	}
}
