package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/stats"
	"github.com/capstan-ota/capstan/wire"
)

// TestUploadWarnsAboutNativeVersions: an upload needing a newer native
// version than part of the fleet reports says so, with the share.
func TestUploadWarnsAboutNativeVersions(t *testing.T) {
	o, ts := newTestOrigin(t)
	if s, r := upload(t, ts, testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "index.html", body: []byte("1")})); s != 201 {
		t.Fatal(s, r)
	}
	rec, _ := o.st.release("com.x", "1.0.0")
	var events []stats.Event
	for i, native := range []string{"1.9.0", "1.9.0", "1.2.0", "2.1.0", "garbage"} {
		events = append(events, stats.Event{Action: stats.ActionCheck, App: "com.x", Channel: "production",
			Device: fmt.Sprintf("d%d", i), Release: rec.ID, Version: "1.0.0", Native: native})
	}
	if _, err := o.IngestEvents(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	post := func(version, minNative string) []string {
		req, _ := http.NewRequest("POST", ts.URL+"/v1/apps/com.x/releases?version="+version+"&min_native="+minNative,
			bytes.NewReader(makeZip(t, zipEntry{name: "index.html", body: []byte(version)})))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out wire.UploadAnswer
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != 201 || out.ID.IsZero() || out.Version != version {
			t.Fatalf("upload %s: %d %+v", version, resp.StatusCode, out)
		}
		// Only the native-version warnings; the unsigned one is another
		// test's (TestUnsignedUploadWarns).
		var native []string
		for _, w := range out.Warnings {
			if !strings.Contains(w, "not signed") {
				native = append(native, w)
			}
		}
		return native
	}
	w := post("2.0.0", "2.0.0")
	if len(w) != 1 || !strings.Contains(w[0], "60%") || !strings.Contains(w[0], "1.9.0") {
		t.Fatalf("warnings %q, want 60%% of checks below 2.0.0", w)
	}
	if w := post("2.0.1", "1.0.0"); len(w) != 0 {
		t.Fatalf("no device is below 1.0.0, got warnings %q", w)
	}
}

// TestCoalescedChecksCount: an edge that folds a device's repeated checks
// into one event (Count) adds them all to the release's checks and to the
// native census, and the device once to the device estimate.
func TestCoalescedChecksCount(t *testing.T) {
	o, ts := newTestOrigin(t)
	if s, r := upload(t, ts, testAdminKey, "com.x", "1.0.0", makeZip(t, zipEntry{name: "index.html", body: []byte("1")})); s != 201 {
		t.Fatal(s, r)
	}
	rec, _ := o.st.release("com.x", "1.0.0")
	check := stats.Event{Action: stats.ActionCheck, App: "com.x", Channel: "production", Device: "d1", Release: rec.ID, Version: "1.0.0", Native: "1.0.0"}
	many := check
	many.Count = 41
	other := check
	other.Device = "d2"
	if _, err := o.IngestEvents(context.Background(), []stats.Event{check, many, other}); err != nil {
		t.Fatal(err)
	}
	rep, err := o.Stats("com.x", "production")
	if err != nil {
		t.Fatal(err)
	}
	if c := rep.Totals; c.Checks != 43 || c.Devices != 2 {
		t.Fatalf("checks %d devices %d, want 43 checks from 2 devices", c.Checks, c.Devices)
	}
	var census nativeCensus
	o.db.View(func(txn store.Txn) error { return getJSON(txn, pfxNatives+"com.x", &census) })
	if census.Checks["1.0.0"] != 43 {
		t.Fatalf("native census %v, want 43 checks on 1.0.0", census.Checks)
	}
}
