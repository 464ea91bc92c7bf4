package device_test

import (
	"context"
	"testing"

	"github.com/capstan-ota/capstan/release"
)

// TestPinnedKeysSurviveARunWithoutKeys is finding 6 of issue 16: one run
// without keys deleted the keys a device had pinned, and with them every
// signature check. Now such a run keeps them: a release signed by a key
// the device never trusted is refused and the installed one kept.
func TestPinnedKeysSurviveARunWithoutKeys(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	_, dir := installV1(t, c, devOpts{})
	stranger, _ := release.GenerateKey()
	c.upload("2.0.0", v2Files, uploadOpts{key: stranger})
	d, _ := c.device(devOpts{dir: dir, keys: []release.PublicKey{}})
	if got := len(d.TrustedKeys()); got != len(c.keys()) {
		t.Fatalf("after a run without keys the device trusts %d keys, want the %d it pinned", got, len(c.keys()))
	}
	mustFail(t, d.Update(context.Background()), "not signed by a trusted key", dir, v1Files)
}
