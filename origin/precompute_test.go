package origin

import (
	"testing"
	"time"

	"github.com/capstan-ota/capstan/release"
)

// A channel change precomputes the patches devices will ask for, in both
// variants: the default one and the zstd-only one a WebView without a
// brotli decoder asks for, so neither kind of device waits for a build.
func TestChannelChangePrecomputesBothVariants(t *testing.T) {
	s, _ := newTestServer(t, nil)
	v1 := mustUpload(t, s, "app", "1.0.0")
	v2 := mustUpload(t, s, "app", "1.0.1")
	want := map[string]bool{
		patchVariantKey(v1.ID, v2.ID, codecsAll):            false,
		patchVariantKey(v1.ID, v2.ID, codecsZstd):           false,
		patchVariantKey(release.ZeroHash, v2.ID, codecsAll): false,
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		for k := range want {
			if _, ok := s.indexedBlob(k); !ok {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the precomputed patches are missing after 60 s", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
