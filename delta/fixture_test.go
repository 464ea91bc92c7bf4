package delta

import (
	"bytes"
	"context"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/release"
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
			skipHeavy(t)
			src := newMemSource()
			from := makeBundle(t, src, c.from, readZip(t, "www-"+c.from+".zip"))
			to := makeBundle(t, src, c.to, readZip(t, "www-"+c.to+".zip"))
			patch, st := roundTrip(t, fixtureConfig(), src, from, to)
			t.Logf("%s→%s: %d B (%+v)", c.from, c.to, len(patch), st)
			if len(patch) > c.max {
				t.Errorf("patch is %d B, goal is at most %d B", len(patch), c.max)
			}
		})
	}
}

// hashNames renames every file the way content-hashing bundlers do:
// "swagger-ui.js" becomes "swagger-ui.1a2b3c4d.js", so every changed file is
// also a renamed one.
func hashNames(files map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(files))
	for p, b := range files {
		h := release.Sum(b).String()[:8]
		dir, name := path.Split(p)
		ext := path.Ext(name)
		out[dir+strings.TrimSuffix(name, ext)+"."+h+ext] = b
	}
	return out
}

// Renamed files must be matched to their old twin: the patch stays within
// the same bound as without renames.
func TestFixtureRenamedPatchSize(t *testing.T) {
	skipHeavy(t)
	src := newMemSource()
	from := makeBundle(t, src, "5.34.0", hashNames(readZip(t, "www-5.34.0.zip")))
	to := makeBundle(t, src, "5.34.1", hashNames(readZip(t, "www-5.34.1.zip")))
	patch, st := roundTrip(t, fixtureConfig(), src, from, to)
	t.Logf("renamed 5.34.0→5.34.1: %d B (%+v)", len(patch), st)
	if st.Renames == 0 {
		t.Errorf("no renamed file was matched to its old twin")
	}
	if len(patch) > 21910 {
		t.Errorf("patch is %d B, goal is at most 21,910 B", len(patch))
	}
}

// With no base the stream is the whole release, applied by the same code.
func TestFixtureFullBundle(t *testing.T) {
	skipHeavy(t)
	src := newMemSource()
	to := makeBundle(t, src, "5.34.1", readZip(t, "www-5.34.1.zip"))
	patch, st := roundTrip(t, DefaultBuildConfig(), src, nil, to)
	t.Logf("full 5.34.1: %d B (%+v)", len(patch), st)
	if st.Literals != len(to.m.Files)-st.Dups {
		t.Errorf("full bundle: %d literals, %d dups, %d files", st.Literals, st.Dups, len(to.m.Files))
	}
	// The zip of the same release is 3,338,079 B; a full bundle must not
	// cost devices more than the zip would.
	if len(patch) > 3338079 {
		t.Errorf("full bundle is %d B, more than the zip", len(patch))
	}
}

// skipHeavy skips the fixture cases under -race (the suffix-array scan runs
// ~15× slower there; the concurrency they exercise is covered by the small
// tests) and under -short. make test runs them.
func skipHeavy(t *testing.T) {
	t.Helper()
	if raceEnabled || testing.Short() {
		t.Skip("fixture case: runs without -race and -short (go test ./delta/)")
	}
}

// fixtureConfig is DefaultBuildConfig without the per-file time budget: on a
// loaded machine the budget can turn a delta into a literal, and a size
// assertion must not depend on timing.
func fixtureConfig() BuildConfig {
	cfg := DefaultBuildConfig()
	cfg.FileTimeout = -1
	return cfg
}

// fixturePair loads a swagger-ui pair into a fresh source.
func fixturePair(b testing.TB, from, to string) (*memSource, *bundle, *bundle) {
	src := newMemSource()
	return src, makeBundle(b, src, from, readZip(b, "www-"+from+".zip")), makeBundle(b, src, to, readZip(b, "www-"+to+".zip"))
}

var benchPairs = [][2]string{{"5.34.0", "5.34.1"}, {"5.34.1", "5.35.0"}}

// BenchmarkBuild measures patch building on the fixture pairs (compare with
// C bsdiff on the tar: scripts/bench-delta.sh).
func BenchmarkBuild(b *testing.B) {
	for _, p := range benchPairs {
		b.Run(p[0]+"-"+p[1], func(b *testing.B) {
			src, from, to := fixturePair(b, p[0], p[1])
			b.SetBytes(to.m.TotalSize())
			var st BuildStats
			for b.Loop() {
				var err error
				st, err = Build(context.Background(), DefaultBuildConfig(), from.m, from.id, to.m, to.id, src, io.Discard)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(st.PatchBytes), "patch-B")
		})
	}
}

// BenchmarkApply measures a device applying the patch into a fresh folder.
func BenchmarkApply(b *testing.B) {
	for _, p := range benchPairs {
		b.Run(p[0]+"-"+p[1], func(b *testing.B) {
			src, from, to := fixturePair(b, p[0], p[1])
			var patch bytes.Buffer
			if _, err := Build(context.Background(), DefaultBuildConfig(), from.m, from.id, to.m, to.id, src, &patch); err != nil {
				b.Fatal(err)
			}
			base, err := OpenDir(writeDir(b, from.files))
			if err != nil {
				b.Fatal(err)
			}
			defer base.Close()
			work := b.TempDir()
			b.SetBytes(to.m.TotalSize())
			i := 0
			for b.Loop() {
				stage := filepath.Join(work, strconv.Itoa(i))
				i++
				if err := os.Mkdir(stage, 0o755); err != nil {
					b.Fatal(err)
				}
				if _, _, err := Apply(context.Background(), DefaultApplyConfig(), bytes.NewReader(patch.Bytes()), baseOf(from, base), targetOf(to), stage); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
