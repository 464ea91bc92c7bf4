package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstan-ota/capstan/internal/testutil"
	// chromedp earns its place: it drives a real Chromium over the DevTools
	// protocol from Go tests, so the console is tested in a browser against
	// a real `capstan dev`, without Node test tooling.
	"github.com/chromedp/chromedp"
)

const consoleApp = "com.example.console"

// chromiumPath finds the Debian chromium (.ci/run installs it). Without
// one the browser tests skip, except in CI, where that is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium in PATH: .ci/run must install the Debian chromium package for the console's browser tests")
	}
	t.Skip("SKIPPING the console's browser tests: no chromium in PATH (apt-get install chromium)")
	return ""
}

// newBrowser starts one headless Chromium for the whole test, with a fresh
// profile and nothing that reaches the network on its own.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		// Containers often give /dev/shm only 64 MB.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser, which lives as long as ctx.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// page runs browser actions with a deadline, failing the test with what
// was being done.
func page(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// js evaluates an expression in the page, awaiting a promise.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// shoot takes a screenshot: the window, or the whole page.
func shoot(t *testing.T, ctx context.Context, name string, full bool) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a := chromedp.CaptureScreenshot()
	if full {
		a = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(c, a)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	saveShot(t, name, png)
}

// waitJS polls a boolean expression until it holds (the console polls
// the origin every few seconds, edges forward events every two).
func waitJS(t *testing.T, ctx context.Context, timeout time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if js[bool](t, ctx, "!!("+expr+")") {
			return
		}
		if time.Now().After(deadline) {
			text := js[string](t, ctx, "document.body.innerText")
			t.Fatalf("%s: not within %s; the page reads:\n%s", what, timeout, text)
		}
		page(t, ctx, "wait", chromedp.Sleep(150*time.Millisecond))
	}
}

// click clicks the element sel like a mouse. The console re-renders a
// region when its poll returns, which can replace the node between the
// lookup and the click: then it looks the element up again.
func click(t *testing.T, ctx context.Context, what, sel string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := chromedp.Do(c, chromedp.Click(chromedp.CSS(sel)))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

func runCLIAs(t *testing.T, server, key string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testutil.Binary(t), args...)
	cmd.Env = append(os.Environ(), "CAPSTAN_SERVER="+server, "CAPSTAN_API_KEY="+key)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("capstan %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// consoleBundle writes a small web bundle whose versions share most bytes,
// so patches are a fraction of a full download.
func consoleBundle(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	var js strings.Builder
	for i := range 6000 {
		fmt.Fprintf(&js, "export const k%d = %d;\n", i, i*7919%100003)
	}
	js.WriteString("export const version = '" + version + "';\n")
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><title>"+version+"</title><script src=app.js></script>"), 0o644)
	os.WriteFile(filepath.Join(dir, "app.js"), []byte(js.String()), 0o644)
	return dir
}

// signIn types a key into the sign-in form like a person.
func signIn(t *testing.T, ctx context.Context, key string) {
	t.Helper()
	page(t, ctx, "sign-in form", chromedp.WaitVisible(chromedp.ID("#key")))
	js[bool](t, ctx, `(document.querySelector('#key').value = '', true)`)
	page(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.ID("key"), key),
		chromedp.Click(chromedp.ID("#signin-button")))
}

const (
	cardSel  = `document.querySelector('[data-channel="production"]')`
	adoption = `(document.querySelector('#chart-adoption')?.dataset.latest || '')`
)

// TestConsoleInBrowser drives the console in headless Chromium against a
// real `capstan dev`, as an operator would: one browser, several checks.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	ctx := newBrowser(t)
	data := t.TempDir()
	_, api, edge := startDev(t, data)
	reader := jsonField(t, runCLIAs(t, api, e2eAdminKey, "keys", "create", "--role", "reader", "--name", "dashboard viewer", "--json"), "key")
	ciKey := jsonField(t, runCLIAs(t, api, e2eAdminKey, "keys", "create", "--role", "publisher", "--app", consoleApp, "--name", "ci", "--json"), "key")

	// Layout shifts are measured from the first paint to the end.
	page(t, ctx, "open the console", chromedp.Navigate(api+"/console"), chromedp.WaitVisible(chromedp.ID("#key")))
	js[bool](t, ctx, `(() => { window.__cls = 0; new PerformanceObserver((l) => { for (const e of l.getEntries()) if (!e.hadRecentInput) window.__cls += e.value; }).observe({type: 'layout-shift', buffered: true}); return true; })()`)

	// A wrong key is refused, in words.
	signIn(t, ctx, "not-a-key")
	waitJS(t, ctx, 10*time.Second, "a wrong key is refused", `document.querySelector('#signin-error').textContent.includes('does not accept this key')`)

	// The admin signs in; no app yet.
	signIn(t, ctx, e2eAdminKey)
	waitJS(t, ctx, 10*time.Second, "signed in as admin", `!document.querySelector('#main').hidden && document.querySelector('#who').textContent.includes('admin')`)
	waitJS(t, ctx, 10*time.Second, "empty state", `document.body.innerText.includes('No apps yet')`)

	// CI uploads; the release appears without a reload.
	runCLIAs(t, api, ciKey, "upload", "--app", consoleApp, "--version", "1.0.0", "--channel", "production", consoleBundle(t, "1.0.0"))
	waitJS(t, ctx, 20*time.Second, "release 1.0.0 in the history, uploaded by the CI key", `(() => { const r = document.querySelector('#releases-table tr[data-version="1.0.0"]'); return r && r.innerText.includes('ci (') })()`)

	// Devices install it: the adoption chart counts them.
	phones := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b"), filepath.Join(t.TempDir(), "c")}
	for _, p := range phones {
		if r := runConsoleDevice(t, edge, p); r.To != "1.0.0" {
			t.Fatalf("device: %+v", r)
		}
	}
	waitJS(t, ctx, 30*time.Second, "three devices on 1.0.0 in the adoption chart", adoption+`.includes('1.0.0=3')`)

	// A new release at 100 %: a device that updates moves in the chart.
	runCLIAs(t, api, ciKey, "upload", "--app", consoleApp, "--version", "1.0.1", "--channel", "production", consoleBundle(t, "1.0.1"))
	waitJS(t, ctx, 20*time.Second, "1.0.1 served on production", cardSel+`?.querySelector('.serving').textContent === '1.0.1'`)
	if r := runConsoleDevice(t, edge, phones[0]); r.To != "1.0.1" || r.Mode != "delta" {
		t.Fatalf("device update: %+v", r)
	}
	waitJS(t, ctx, 30*time.Second, "the adoption chart moves: one device on 1.0.1, two left on 1.0.0", adoption+`.includes('1.0.1=1') && `+adoption+`.includes('1.0.0=2')`)
	waitJS(t, ctx, 20*time.Second, "the release history shows the patch from 1.0.0", `document.querySelector('#releases-table tr[data-version="1.0.1"]').innerText.includes('from 1.0.0')`)

	// Keyboard only: Tab reaches "Change rollout…", Enter opens the
	// confirmation, which says what devices will get.
	page(t, ctx, "focus the page top", chromedp.Focus(chromedp.ID("#nav-releases")))
	reached := false
	for range 40 {
		if js[string](t, ctx, `document.activeElement?.dataset.action || ''`) == "rollout" {
			reached = true
			break
		}
		page(t, ctx, "tab", chromedp.KeyEvent("\t"))
	}
	if !reached {
		t.Fatal("Tab never reached the Change rollout button")
	}
	page(t, ctx, "open the rollout dialog", chromedp.KeyEvent("\r"))
	waitJS(t, ctx, 5*time.Second, "the dialog opens", `document.querySelector('#confirm').open`)
	js[bool](t, ctx, `(document.querySelector('#confirm input[name=rollout]').value = '', true)`)
	page(t, ctx, "type 30 %", chromedp.SendKeys(chromedp.CSS(`#confirm input[name=rollout]`), "30"))
	what := js[string](t, ctx, `document.querySelector('#confirm-what').textContent`)
	if !strings.Contains(what, "30\u00a0% of the devices on production") || !strings.Contains(what, "1.0.1") || !strings.Contains(what, "The other 70\u00a0% are offered 1.0.0") {
		t.Fatalf("the confirmation does not say what devices get: %q", what)
	}
	shoot(t, ctx, "console-confirm.png", false)
	click(t, ctx, "confirm", `#confirm [data-action=confirm]`)
	waitJS(t, ctx, 10*time.Second, "the card shows 30 %", `!document.querySelector('#confirm').open && `+cardSel+`.querySelector('.rollout').textContent === '30\u00a0%'`)
	if ch := cliChannel(t, api); ch.RolloutBPS != 3000 || ch.Release.Version != "1.0.1" {
		t.Fatalf("capstan channel list after the console set 30 %%: %+v", ch)
	}

	// Pause from the console; the CLI sees it.
	click(t, ctx, "pause", `[data-channel="production"] [data-action=pause]`)
	waitJS(t, ctx, 5*time.Second, "the pause dialog", `document.querySelector('#confirm').open && document.querySelector('#confirm').innerText.includes('No new device on production will be offered 1.0.1')`)
	click(t, ctx, "confirm pause", `#confirm [data-action=confirm]`)
	waitJS(t, ctx, 10*time.Second, "the card says paused", cardSel+`.querySelector('.status').dataset.status === 'Paused'`)
	if ch := cliChannel(t, api); !ch.Paused {
		t.Fatalf("capstan channel list after pausing: %+v", ch)
	}

	// The fleet: the dev edge reports itself.
	click(t, ctx, "open the fleet", "#nav-fleet")
	waitJS(t, ctx, 20*time.Second, "the dev edge is in the fleet, healthy", `(() => { const r = document.querySelector('#edges-table tbody tr[data-edge]'); return r && r.innerText.includes('`+edge+`') && r.innerText.includes('ok') })()`)

	// Screenshots and reflow: desktop, phone width, 200 % zoom.
	click(t, ctx, "back to releases", "#nav-releases")
	waitJS(t, ctx, 10*time.Second, "charts again", adoption+`.includes('1.0.1=1')`)
	shoot(t, ctx, "console-releases.png", true)
	for _, v := range []struct {
		name          string
		width, height int64
		scale         float64
	}{{"console-phone.png", 390, 844, 2}, {"console-zoom200.png", 640, 450, 2}} {
		page(t, ctx, "viewport "+v.name, chromedp.EmulateViewport(v.width, v.height, chromedp.EmulateScale(v.scale)))
		waitJS(t, ctx, 5*time.Second, "layout at "+v.name, `window.innerWidth === `+fmt.Sprint(v.width))
		if overflow := js[int](t, ctx, `document.documentElement.scrollWidth - window.innerWidth`); overflow > 0 {
			t.Errorf("%s: the page is %d px wider than the window: it must reflow, not scroll sideways", v.name, overflow)
		}
		shoot(t, ctx, v.name, false)
	}
	page(t, ctx, "desktop again", chromedp.EmulateViewport(1280, 900))
	click(t, ctx, "fleet shot", "#nav-fleet")
	waitJS(t, ctx, 10*time.Second, "fleet", `document.querySelector('#edges-table tbody tr[data-edge]')`)
	shoot(t, ctx, "console-fleet.png", false)
	click(t, ctx, "back", "#nav-releases")

	// Roll back to 1.0.0 from the console; the CLI sees a rollback record.
	waitJS(t, ctx, 10*time.Second, "releases view", cardSel+`?.querySelector('[data-action=rollback]')`)
	click(t, ctx, "roll back", `[data-channel="production"] [data-action=rollback]`)
	waitJS(t, ctx, 5*time.Second, "the rollback dialog", `document.querySelector('#confirm').open`)
	js[bool](t, ctx, `(() => { const s = document.querySelector('#confirm select[name=to]'); s.value = '1.0.0'; s.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`)
	waitJS(t, ctx, 5*time.Second, "the rollback says what devices get", `document.querySelector('#confirm-what').textContent.includes('Every device on production will be moved to 1.0.0, including devices that already installed 1.0.1')`)
	click(t, ctx, "confirm rollback", `#confirm [data-action=confirm]`)
	waitJS(t, ctx, 10*time.Second, "the card shows the rollback", cardSel+`.querySelector('.status').dataset.status === 'Rolled back' && `+cardSel+`.querySelector('.serving').textContent === '1.0.0'`)
	if ch := cliChannel(t, api); ch.Release.Version != "1.0.0" || ch.RolloutBPS != 10000 || !ch.Rollback {
		t.Fatalf("capstan channel list after the console's rollback: %+v", ch)
	}

	// API keys: create one in the console, then revoke it there.
	click(t, ctx, "open keys", "#nav-keys")
	waitJS(t, ctx, 10*time.Second, "the key list", `document.querySelector('#keys-table')`)
	page(t, ctx, "name the key", chromedp.SendKeys(chromedp.CSS(`.key-form input[name=name]`), "console-made"))
	click(t, ctx, "create the key", `[data-action=create-key]`)
	waitJS(t, ctx, 10*time.Second, "the new secret shown once", `(document.querySelector('#secret-value')?.textContent || '').startsWith('cap_')`)
	id := js[string](t, ctx, `[...document.querySelectorAll('#keys-table tr[data-key-id]')].find((r) => r.innerText.includes('console-made')).dataset.keyId`)
	if !strings.Contains(runCLIAs(t, api, e2eAdminKey, "keys", "list"), id) {
		t.Fatalf("capstan keys list does not show the key %s made in the console", id)
	}
	click(t, ctx, "revoke", `[data-key="revoke-`+id+`"]`)
	waitJS(t, ctx, 5*time.Second, "the revoke dialog", `document.querySelector('#confirm').open && document.querySelector('#confirm').innerText.includes('stops working at once')`)
	click(t, ctx, "confirm revoke", `#confirm [data-action=confirm]`)
	waitJS(t, ctx, 10*time.Second, "the key is gone", `!document.querySelector('#keys-table tr[data-key-id="`+id+`"]')`)
	if strings.Contains(runCLIAs(t, api, e2eAdminKey, "keys", "list"), id) {
		t.Fatalf("key %s still listed after the console revoked it", id)
	}
	click(t, ctx, "back to releases", "#nav-releases")

	// Devices that revert a release pause its rollout; the card says why.
	runCLIAs(t, api, e2eAdminKey, "channel", "set", "--app", consoleApp, "--channel", "production", "--auto-pause-failure-rate", "10", "--auto-pause-min-devices", "1", "--auto-pause-min-addresses", "1")
	runCLIAs(t, api, ciKey, "upload", "--app", consoleApp, "--version", "1.0.2", "--channel", "production", consoleBundle(t, "1.0.2"))
	if r := runConsoleDevice(t, edge, phones[1]); r.To != "1.0.2" {
		t.Fatalf("device install of 1.0.2: %+v", r)
	}
	if r := runConsoleDevice(t, edge, phones[1], "--confirm-timeout", "1ns"); r.Status != "reverted" {
		t.Fatalf("device revert of 1.0.2: %+v", r)
	}
	waitJS(t, ctx, 30*time.Second, "the card says auto-paused, and why", cardSel+`.querySelector('.status').dataset.status === 'Auto-paused' && `+cardSel+`.querySelector('.why').textContent.includes('over the 10\u00a0% threshold')`)
	shoot(t, ctx, "console-autopaused.png", false)

	// Promote what beta serves into production from the console.
	runCLIAs(t, api, ciKey, "upload", "--app", consoleApp, "--version", "1.0.3", "--channel", "beta", "--new-channel", consoleBundle(t, "1.0.3"))
	waitJS(t, ctx, 20*time.Second, "the promote button", cardSel+`.querySelector('[data-action=promote]')`)
	click(t, ctx, "promote", `[data-channel="production"] [data-action=promote]`)
	waitJS(t, ctx, 5*time.Second, "the promote dialog says what devices get", `document.querySelector('#confirm').open && document.querySelector('#confirm-what').textContent.includes('production will serve 1.0.3 (what beta serves now) to 100\u00a0% of its devices')`)
	click(t, ctx, "confirm promote", `#confirm [data-action=confirm]`)
	waitJS(t, ctx, 10*time.Second, "production serves 1.0.3", cardSel+`.querySelector('.serving').textContent === '1.0.3'`)
	if ch := cliChannel(t, api); ch.Release.Version != "1.0.3" || ch.Paused {
		t.Fatalf("capstan channel list after the console promoted beta: %+v", ch)
	}

	if cls := js[float64](t, ctx, `window.__cls`); cls > 0.1 {
		t.Errorf("cumulative layout shift %.3f while data loaded and refreshed, want ≤ 0.1", cls)
	}

	// A reader sees no action buttons, and the server refuses anyway.
	click(t, ctx, "sign out", "#signout")
	signIn(t, ctx, reader)
	waitJS(t, ctx, 10*time.Second, "signed in as reader", `document.querySelector('#who').textContent.includes('reader')`)
	waitJS(t, ctx, 10*time.Second, "the reader sees the channel", cardSel+` && `+cardSel+`.querySelector('.serving').textContent === '1.0.3'`)
	buttons := js[int](t, ctx, `document.querySelectorAll('[data-action]').length`)
	keysTab := js[bool](t, ctx, `document.querySelector('#nav-keys').hidden`)
	if buttons != 0 || !keysTab {
		t.Fatalf("a reader sees %d action buttons (keys tab hidden: %v)", buttons, keysTab)
	}
	refused := js[string](t, ctx, `fetch('/v1/apps/`+consoleApp+`/channels/production', {method: 'PUT', headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('capstan.console.key'), 'Content-Type': 'application/json'}, body: JSON.stringify({paused: true})}).then((r) => r.status + ' ' + r.statusText)`)
	if !strings.HasPrefix(refused, "403") {
		t.Fatalf("a reader's key pausing the rollout: %s, want 403", refused)
	}
	if ch := cliChannel(t, api); ch.Paused {
		t.Fatal("the reader's request paused the rollout")
	}

	// The reader's key is revoked while the page is open: the next poll
	// returns to the sign-in form and says why.
	readerID := js[string](t, ctx, `document.querySelector('#who').textContent.split(' ')[1]`)
	runCLIAs(t, api, e2eAdminKey, "keys", "revoke", readerID)
	waitJS(t, ctx, 20*time.Second, "a revoked key is signed out, in words", `!document.querySelector('#signin').hidden && document.querySelector('#signin-error').textContent.includes('does not accept this key') && !document.querySelector('[data-channel]')`)
}

type consoleChannel struct {
	Release struct {
		Version string `json:"version"`
	} `json:"release"`
	RolloutBPS int  `json:"rollout_bps"`
	Paused     bool `json:"paused"`
	Rollback   bool `json:"rollback"`
	Channel    string
}

// cliChannel is production as `capstan channel list --json` reports it.
func cliChannel(t *testing.T, api string) consoleChannel {
	t.Helper()
	var out struct{ Channels []consoleChannel }
	if err := json.Unmarshal([]byte(runCLIAs(t, api, e2eAdminKey, "channel", "list", "--app", consoleApp, "--json")), &out); err != nil {
		t.Fatal(err)
	}
	for _, c := range out.Channels {
		if c.Channel == "production" {
			return c
		}
	}
	t.Fatalf("no production channel: %+v", out)
	return consoleChannel{}
}

func runConsoleDevice(t *testing.T, edge, dir string, extra ...string) deviceJSON {
	t.Helper()
	out := runCLIAs(t, "", "", append([]string{"device", "--insecure-no-verify", "--edge", edge, "--app", consoleApp, "--channel", "production", "--dir", dir, "--no-rank", "--json"}, extra...)...)
	var r deviceJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("device output %q: %v", out, err)
	}
	return r
}

func jsonField(t *testing.T, out, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	s, _ := m[field].(string)
	if s == "" {
		t.Fatalf("no %s in %s", field, out)
	}
	return s
}

// saveShot writes a screenshot into docs/console/ when
// CAPSTAN_CONSOLE_SCREENSHOTS is set (how docs/console.md's pictures are
// made), and into the test's temp folder otherwise.
func saveShot(t *testing.T, name string, png []byte) {
	t.Helper()
	dir := t.TempDir()
	if os.Getenv("CAPSTAN_CONSOLE_SCREENSHOTS") != "" {
		dir = filepath.Join(testutil.RepoRoot(t), "docs", "console")
		os.MkdirAll(dir, 0o755)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
