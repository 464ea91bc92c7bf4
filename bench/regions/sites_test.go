package regions

import (
	"strings"
	"testing"
	"time"
)

func TestParseSites(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []Site
		err      string
	}{
		{"empty is the default", "", DefaultSites(), ""},
		{"two", "eu=5ms, us=40ms", []Site{{"eu", 5 * time.Millisecond}, {"us", 40 * time.Millisecond}}, ""},
		{"no delay", "eu", nil, "want REGION=RTT"},
		{"bad delay", "eu=fast", nil, "duration"},
		{"negative", "eu=-5ms", nil, "duration"},
		{"too far", "moon=20s", nil, "duration"},
		{"twice", "eu=5ms,eu=6ms", nil, "twice"},
		{"too many", manySites(17), nil, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSites(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("site %d = %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func manySites(n int) string {
	var parts []string
	for i := 0; i < n; i++ {
		parts = append(parts, "r"+string(rune('a'+i))+"=1ms")
	}
	return strings.Join(parts, ",")
}
