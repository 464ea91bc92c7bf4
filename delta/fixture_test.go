package delta

import (
	"testing"
)

// The goals of issue 3: a patch no larger than C bsdiff of the uncompressed
// tar of the two bundles (measured on this fixture: 21,910 and 127,798 B).
func TestFixturePatchSize(t *testing.T) {
	cases := []struct {
		from, to string
		max      int
	}{
		{"5.34.0", "5.34.1", 21910},
		{"5.34.1", "5.35.0", 127798},
	}
	for _, c := range cases {
		t.Run(c.from+"-"+c.to, func(t *testing.T) {
			src := newMemSource()
			from := makeBundle(t, src, c.from, readZip(t, "www-"+c.from+".zip"))
			to := makeBundle(t, src, c.to, readZip(t, "www-"+c.to+".zip"))
			patch, st := roundTrip(t, DefaultConfig(), src, from, to)
			t.Logf("%s→%s: %d B (%+v)", c.from, c.to, len(patch), st)
			if len(patch) > c.max {
				t.Errorf("patch is %d B, goal is at most %d B", len(patch), c.max)
			}
		})
	}
}
