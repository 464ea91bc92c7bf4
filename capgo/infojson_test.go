package capgo

import (
	"encoding/json"
	"testing"
)

// TestScanInfoTakesPluginBodies: the bodies the plugin sends take the
// direct scan, and decode as encoding/json decodes them.
func TestScanInfoTakesPluginBodies(t *testing.T) {
	for _, body := range []string{exampleBody,
		`{"app_id":"a.b","device_id":"d","version_code":230,"is_prod":"true","is_emulator":null,"custom_id":null,"x":1.5e3}`,
		" {\n\t\"app_id\" : \"a.b\" , \"device_id\":\"d\" } \n", `{}`} {
		var fast, slow Info
		if !scanInfo(body, &fast) {
			t.Errorf("scan refused %s", body)
			continue
		}
		if err := json.Unmarshal([]byte(body), &slow); err != nil || fast != slow {
			t.Errorf("%s: scan %+v, encoding/json %+v (%v)", body, fast, slow, err)
		}
	}
	// The rest goes to encoding/json, which decides.
	for _, body := range []string{`{"app_id":"a\u002eb","device_id":"d"}`, `{"APP_ID":"a.b","device_id":"d"}`,
		`{"app_id":"a.b","device_id":"d","x":{"y":1}}`, `{"app_id":"é"}`, `{"app_id":"a.b",}`, `{"is_prod":"yes"}`, `{"is_prod":1}`} {
		var in Info
		if scanInfo(body, &in) {
			t.Errorf("scan took %s", body)
		}
	}
}

// TestParseInfoAllocs: a plugin body costs one allocation (the copy its
// fields point into), not one per field.
func TestParseInfoAllocs(t *testing.T) {
	body := []byte(exampleBody)
	var in Info
	if n := testing.AllocsPerRun(100, func() {
		if err := ParseInfoInto(body, &in); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Fatalf("%.0f allocations per parse, want at most 1", n)
	}
}

func BenchmarkParseInfo(b *testing.B) {
	body := []byte(exampleBody)
	b.ReportAllocs()
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		var in Info
		for b.Loop() {
			if err := ParseInfoInto(body, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var in Info
			if err := json.Unmarshal(body, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzParseInfoMatchesJSON holds the direct scan to encoding/json: whatever
// it accepts, encoding/json accepts and decodes to the same Info, and
// ParseInfo agrees with decoding by encoding/json alone.
func FuzzParseInfoMatchesJSON(f *testing.F) {
	for _, s := range []string{exampleBody, `{}`, ` { } `, `{"app_id":"a.b","device_id":"d","is_prod":"true"}`,
		`{"app_id":"a.b","device_id":-0.5e-3}`, `{"app_id":"a.b","device_id":01}`, `{"app_id":"a.b","device_id":1.}`,
		`{"app_id":"a.b","device_id":"d","is_prod":""}`, `{"app_id":"a.b","device_id":"d","Is_Prod":true}`,
		`{"app_id":"a.b","app_id":null,"device_id":true}`, `{"a":"b"}x`, `{"app_id":"a.b"`, `nul`, `{"app_id":"\t"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast Info
		if scanInfo(string(b), &fast) {
			var slow Info
			if err := json.Unmarshal(b, &slow); err != nil {
				t.Fatalf("scan accepted what encoding/json refuses (%v)", err)
			}
			if fast != slow {
				t.Fatalf("scan %+v, encoding/json %+v", fast, slow)
			}
		}
		var got Info
		gotErr := ParseInfoInto(b, &got)
		var want Info
		wantErr := json.Unmarshal(b, &want)
		if wantErr == nil {
			wantErr = want.Validate()
		}
		if len(b) > MaxInfoBody {
			return
		}
		if (gotErr == nil) != (wantErr == nil) || gotErr == nil && got != want {
			t.Fatalf("ParseInfoInto %+v (%v), encoding/json %+v (%v)", got, gotErr, want, wantErr)
		}
	})
}
