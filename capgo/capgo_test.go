package capgo

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/capstan-ota/capstan/release"
)

const exampleBody = `{"platform":"android","device_id":"0b6c2a9e-8d1f-4c5e-9a7b-2f4e6d8c1a3b","app_id":"com.example.app",
 "custom_id":"","version_build":"2.3.0","version_code":"230","version_os":"14","version_name":"2.3.4",
 "plugin_version":"8.51.14","is_emulator":false,"is_prod":true,"install_source":"google_play",
 "defaultChannel":"","key_id":"MIIBCgKCAQEAu7lq0Yz3"}`

func TestParseInfo(t *testing.T) {
	in, err := ParseInfo([]byte(exampleBody))
	if err != nil {
		t.Fatal(err)
	}
	if in.AppID != "com.example.app" || in.VersionName != "2.3.4" || !bool(in.IsProd) || bool(in.IsEmulator) || in.KeyID != "MIIBCgKCAQEAu7lq0Yz3" {
		t.Fatalf("%+v", in)
	}
	for _, tc := range []struct {
		name, body string
		ok         bool
	}{
		{"unknown fields", `{"app_id":"a.b","device_id":"d","x":{"y":[1,2]},"z":null}`, true},
		{"number version_code", `{"app_id":"a.b","device_id":"d","version_code":230}`, true},
		{"string booleans", `{"app_id":"a.b","device_id":"d","is_prod":"false","is_emulator":"true"}`, true},
		{"null fields", `{"app_id":"a.b","device_id":"d","custom_id":null,"is_prod":null}`, true},
		{"no app", `{"device_id":"d"}`, false},
		{"no device", `{"app_id":"a.b"}`, false},
		{"object app", `{"app_id":{},"device_id":"d"}`, false},
		{"bad boolean", `{"app_id":"a.b","device_id":"d","is_prod":"yes"}`, false},
		{"array", `[]`, false},
		{"bad app id", `{"app_id":"a b","device_id":"d"}`, false},
		{"long device", `{"app_id":"a.b","device_id":"` + strings.Repeat("d", MaxDeviceIDLen+1) + `"}`, false},
		{"long field", `{"app_id":"a.b","device_id":"d","custom_id":"` + strings.Repeat("c", MaxFieldLen+1) + `"}`, false},
		{"oversized", `{"app_id":"a.b","device_id":"d","pad":"` + strings.Repeat("p", MaxInfoBody) + `"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseInfo([]byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error does not wrap ErrBadRequest: %v", err)
			}
		})
	}
}

func TestParseStats(t *testing.T) {
	ev := `{"app_id":"a.b","device_id":"d","action":"set","version_name":"1.0.0","old_version_name":"builtin","timestamp":17}`
	for _, tc := range []struct {
		name, body    string
		n, dropped    int
		wantErr       bool
		firstVersion  string
		firstAction   string
		firstTimestmp int64
	}{
		{"object", ev, 1, 0, false, "1.0.0", "set", 17},
		{"array", "[" + ev + "," + ev + "]", 2, 0, false, "1.0.0", "set", 17},
		{"bad entries dropped", `[1,"x",{"app_id":"a.b"},` + ev + `]`, 1, 3, false, "1.0.0", "set", 17},
		{"empty array", `[]`, 0, 0, false, "", "", 0},
		{"string", `"x"`, 0, 0, true, "", "", 0},
		{"too many", "[" + strings.Repeat(ev+",", MaxStatsEvents) + ev + "]", 0, 0, true, "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, dropped, err := ParseStats([]byte(tc.body))
			if (err != nil) != tc.wantErr || len(st) != tc.n || dropped != tc.dropped {
				t.Fatalf("got %d events, %d dropped, err %v", len(st), dropped, err)
			}
			if tc.n > 0 && (string(st[0].VersionName) != tc.firstVersion || string(st[0].Action) != tc.firstAction || st[0].Timestamp != tc.firstTimestmp || st[0].OldVersionName != "builtin") {
				t.Fatalf("%+v", st[0])
			}
		})
	}
}

func ref(v string) release.Ref { return release.Ref{Version: v, ID: release.Sum([]byte(v))} }

func TestCheck(t *testing.T) {
	base := func() *Info {
		return &Info{Platform: "android", DeviceID: "d", AppID: "a.b", VersionBuild: "2.3.0", VersionName: "2.3.4", IsProd: true, PluginVersion: "8.51.14"}
	}
	for _, tc := range []struct {
		name   string
		mod    func(*Info)
		target Target
		rules  Rules
		kind   string
		code   string
	}{
		{"update", nil, Target{Ref: ref("2.3.5")}, Rules{}, "", ""},
		{"same version", nil, Target{Ref: ref("2.3.4")}, Rules{}, KindUpToDate, CodeNoNewVersion},
		{"major over native", nil, Target{Ref: ref("3.0.0")}, Rules{}, KindBlocked, CodeDisableMajor},
		{"major allowed by none", nil, Target{Ref: ref("3.0.0")}, Rules{Flags: ChannelFlags{DisableAutoUpdate: AutoUpdateNone}}, "", ""},
		{"none but channel blocks major", nil, Target{Ref: ref("3.0.0")}, Rules{Flags: ChannelFlags{DisableAutoUpdate: AutoUpdateNone}, BlockMajor: true}, KindBlocked, CodeDisableMajor},
		{"minor", nil, Target{Ref: ref("2.4.0")}, Rules{Flags: ChannelFlags{DisableAutoUpdate: AutoUpdateMinor}}, KindBlocked, CodeDisableMinor},
		{"minor same", nil, Target{Ref: ref("2.3.9")}, Rules{Flags: ChannelFlags{DisableAutoUpdate: AutoUpdateMinor}}, "", ""},
		{"patch", nil, Target{Ref: ref("2.3.1")}, Rules{Flags: ChannelFlags{DisableAutoUpdate: AutoUpdatePatch}}, KindBlocked, CodeDisablePatch},
		{"metadata without min", nil, Target{Ref: ref("2.3.5")}, Rules{Flags: ChannelFlags{DisableAutoUpdate: AutoUpdateMetadata}}, KindFailed, CodeMisconfigured},
		{"metadata over native", nil, Target{Ref: ref("2.3.5"), MinNative: "2.4.0"}, Rules{Flags: ChannelFlags{DisableAutoUpdate: AutoUpdateMetadata}}, KindBlocked, CodeDisableMetadata},
		{"min native over native", nil, Target{Ref: ref("2.3.5"), MinNative: "2.4.0"}, Rules{}, KindBlocked, CodeDisableUnderNative},
		{"under native", nil, Target{Ref: ref("2.2.0")}, Rules{}, KindBlocked, CodeDisableUnderNative},
		{"under native allowed", nil, Target{Ref: ref("2.2.0")}, Rules{Flags: ChannelFlags{AllowUnderNative: true}}, "", ""},
		{"loose native", func(in *Info) { in.VersionBuild = "v2.3" }, Target{Ref: ref("2.3.5")}, Rules{}, "", ""},
		{"unknown native", func(in *Info) { in.VersionBuild = "unknown" }, Target{Ref: ref("2.3.5")}, Rules{}, KindFailed, CodeUnknownVersionBuild},
		{"bad native", func(in *Info) { in.VersionBuild = "x.y" }, Target{Ref: ref("2.3.5")}, Rules{}, KindFailed, CodeSemverError},
		{"ios closed", func(in *Info) { in.Platform = "ios" }, Target{Ref: ref("2.3.5")}, Rules{Flags: ChannelFlags{NoIOS: true}}, KindBlocked, "disabled_platform_ios"},
		{"prod closed", nil, Target{Ref: ref("2.3.5")}, Rules{Flags: ChannelFlags{NoProd: true}}, KindBlocked, CodeDisableProdBuild},
		{"dev closed", func(in *Info) { in.IsProd = false }, Target{Ref: ref("2.3.5")}, Rules{Flags: ChannelFlags{NoDev: true}}, KindBlocked, CodeDisableDevBuild},
		{"emulator closed", func(in *Info) { in.IsEmulator = true }, Target{Ref: ref("2.3.5")}, Rules{Flags: ChannelFlags{NoEmulator: true}}, KindBlocked, CodeDisableEmulator},
		{"device closed", nil, Target{Ref: ref("2.3.5")}, Rules{Flags: ChannelFlags{NoDevice: true}}, KindBlocked, CodeDisableDevice},
		{"key mismatch", func(in *Info) { in.KeyID = "AAA" }, Target{Ref: ref("2.3.5"), KeyID: "BBB"}, Rules{}, KindBlocked, CodeKeyIDMismatch},
		{"key matches", func(in *Info) { in.KeyID = "AAA" }, Target{Ref: ref("2.3.5"), KeyID: "AAA"}, Rules{}, "", ""},
		{"encrypted, device has no key", nil, Target{Ref: ref("2.3.5"), KeyID: "AAA"}, Rules{}, KindBlocked, CodeKeyIDMismatch},
		{"failed before", nil, Target{Ref: ref("2.3.5"), Failed: true}, Rules{}, KindBlocked, CodeFailedOnDevice},
		{"builtin target", nil, Target{}, Rules{}, "", ""},
		{"builtin target, plugin too old", func(in *Info) { in.PluginVersion = "6.1.9" }, Target{}, Rules{}, KindFailed, CodeBuiltinTooOld},
		{"builtin on builtin", func(in *Info) { in.VersionName = Builtin }, Target{}, Rules{}, KindUpToDate, CodeAlreadyOnBuiltin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := base()
			if tc.mod != nil {
				tc.mod(in)
			}
			r := Check(in, tc.target, tc.rules)
			switch {
			case tc.code == "" && r != nil:
				t.Fatalf("refused: %+v", r)
			case tc.code != "" && (r == nil || r.Kind != tc.kind || r.Error != tc.code || r.Message == ""):
				t.Fatalf("got %+v, want %s/%s", r, tc.kind, tc.code)
			}
			if tc.code == CodeDisableMajor && (!r.Major || r.Version != "3.0.0" || r.Old != "2.3.0") {
				t.Fatalf("major answer %+v", r)
			}
			if tc.code == CodeAlreadyOnBuiltin && r.Version != "" {
				t.Fatalf("a device on builtin is told %+v", r)
			}
		})
	}
}

func TestSupportsManifest(t *testing.T) {
	for v, want := range map[string]bool{"8.51.14": true, "7.0.35": true, "7.0.34": false, "6.25.0": true, "6.24.9": false,
		"5.10.0": true, "5.2.0": false, "4.0.0": false, "9.0.0": true, "garbage": true} {
		if got := SupportsManifest(v); got != want {
			t.Errorf("SupportsManifest(%q) = %v", v, got)
		}
	}
}

func TestAnswersHaveIOSTypes(t *testing.T) {
	b, _ := json.Marshal(&UpdateAnswer{Version: "1.0.0", URL: "https://x/y", Checksum: strings.Repeat("a", 64), Manifest: []ManifestEntry{{"a", "b", "c"}}})
	var m map[string]any
	json.Unmarshal(b, &m)
	if _, ok := m["session_key"].(string); !ok {
		t.Fatalf("session_key must always be a string: %s", b)
	}
	b, _ = json.Marshal(refuse(KindUpToDate, CodeNoNewVersion, "x"))
	if string(b) != `{"error":"no_new_version_available","message":"x","kind":"up_to_date"}` {
		t.Fatalf("%s", b)
	}
}

func TestFolderPrefix(t *testing.T) {
	for _, tc := range []struct {
		paths []string
		want  string
	}{
		{[]string{"index.html", "a/b.js"}, ""},
		{[]string{"www/a.js", "www/index.html"}, "www/"},
		{[]string{"www/index.html", "other/x"}, ""},
		{[]string{"a.js"}, ""},
		{[]string{"dist/a/b.js", "dist/c.css"}, "dist/"},
	} {
		if got := FolderPrefix(tc.paths); got != tc.want {
			t.Errorf("FolderPrefix(%q) = %q, want %q", tc.paths, got, tc.want)
		}
	}
}

func TestChannelIDIsStableSmallNumber(t *testing.T) {
	a, b := ChannelID("com.x", "beta"), ChannelID("com.x", "production")
	if a == b || a <= 0 || a >= 1<<31 || a != ChannelID("com.x", "beta") {
		t.Fatalf("%d %d", a, b)
	}
}

func TestEventAction(t *testing.T) {
	for a, want := range map[string]string{"set": EventInstall, "update_fail": EventRevert, "download_fail": EventFail,
		"download_manifest_checksum_fail": EventFail, "download_zip_complete": EventDownload, "app_moved_to_foreground": "", "x": ""} {
		if got := EventAction(a); got != want {
			t.Errorf("EventAction(%q) = %q, want %q", a, got, want)
		}
	}
	if MetricAction("set") != "set" || MetricAction("made_up") != "other" {
		t.Fatal("MetricAction")
	}
}

func FuzzParseInfo(f *testing.F) {
	for _, s := range []string{exampleBody, `{}`, `[]`, `{"app_id":"a.b","device_id":"d","is_prod":"true"}`,
		`{"app_id":"a.b","device_id":1e400}`, `{"app_id":"a.b","device_id":"d","version_code":-0.5e-3}`, `null`, `"x"`,
		`{"app_id":"\u0000","device_id":"d"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := ParseInfo(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error does not wrap ErrBadRequest: %v", err)
			}
			return
		}
		if release.ValidateApp(string(in.AppID)) != nil || in.DeviceID == "" || len(in.DeviceID) > MaxDeviceIDLen {
			t.Fatalf("accepted invalid info %+v", in)
		}
		// Whatever was accepted, the decision never panics and answers
		// with a known kind.
		r := Check(in, Target{Ref: ref("1.2.3")}, Rules{})
		if r != nil && r.Kind != KindUpToDate && r.Kind != KindBlocked && r.Kind != KindFailed {
			t.Fatalf("kind %q", r.Kind)
		}
	})
}

func FuzzParseStats(f *testing.F) {
	for _, s := range []string{`[{"app_id":"a.b","device_id":"d","action":"set"}]`, `{"app_id":"a.b","device_id":"d","action":"x"}`, `[1,2]`, `[`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, dropped, err := ParseStats(b)
		if err != nil {
			return
		}
		if len(st)+dropped > MaxStatsEvents {
			t.Fatalf("%d events", len(st)+dropped)
		}
		for _, s := range st {
			if s.Action == "" || s.AppID == "" || s.DeviceID == "" {
				t.Fatalf("accepted %+v", s)
			}
		}
	})
}
