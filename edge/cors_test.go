package edge_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestCORSForPages: a page on another origin (the Capacitor client in a
// WebView) may read the device endpoints and post events; native clients
// see no extra header, and endpoints that are not the device's stay
// same-origin.
func TestCORSForPages(t *testing.T) {
	f := newFleet(t)
	f.upload(t, "1.0.0", map[string][]byte{"index.html": []byte("<h1>1</h1>")})
	e := startEdge(t, f, t.TempDir(), nil)
	if err := e.SyncFromOrigin(context.Background()); err != nil {
		t.Fatal(err)
	}
	const page = "capacitor://localhost"

	resp, body := get(t, e.url+"/v1/check?app=com.x&channel=production&device=d", "Origin", page)
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("check from a page: %d, Allow-Origin %q: %s", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), body)
	}
	if !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Content-Encoding") {
		t.Errorf("Expose-Headers %q: the client cannot tell a compressed answer", resp.Header.Get("Access-Control-Expose-Headers"))
	}
	if resp, _ := get(t, e.url+"/v1/check?app=com.x&channel=production&device=d"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("a request without Origin got CORS headers")
	}
	if resp, _ := get(t, e.url+"/v1/blobs/"+strings.Repeat("0", 64), "Origin", page); resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("an error answer to a page must be readable too: %d", resp.StatusCode)
	}
	if resp, _ := get(t, e.url+"/metrics", "Origin", page); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("/metrics is not a device endpoint but answers pages")
	}

	// The preflight a browser sends before POST /v1/events with JSON.
	req, _ := http.NewRequest("OPTIONS", e.url+"/v1/events", nil)
	req.Header.Set("Origin", page)
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type")
	pre, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pre.Body.Close()
	if pre.StatusCode != 204 || !strings.Contains(pre.Header.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers")), "content-type") {
		t.Fatalf("preflight: %d, methods %q, headers %q", pre.StatusCode, pre.Header.Get("Access-Control-Allow-Methods"), pre.Header.Get("Access-Control-Allow-Headers"))
	}
	req, _ = http.NewRequest("POST", e.url+"/v1/events", strings.NewReader(`[{"action":"check","app":"com.x","channel":"production","device":"d","release":"`+strings.Repeat("0", 64)+`"}]`))
	req.Header.Set("Origin", page)
	req.Header.Set("Content-Type", "application/json")
	post, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode/100 != 2 || post.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("events from a page: %d, Allow-Origin %q", post.StatusCode, post.Header.Get("Access-Control-Allow-Origin"))
	}
}
