package device_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/capstan-ota/capstan/device"
)

// resetProxy forwards to an edge, but for paths cut matches it sends the
// headers with the full Content-Length, half the body, then resets the TCP
// connection (SO_LINGER 0): a connection reset mid-download.
func resetProxy(t *testing.T, upstream string, cut func(path string) bool) string {
	t.Helper()
	var resets atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, upstream+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == 200 && cut(r.URL.Path) {
			hj := w.(http.Hijacker)
			conn, bw, _ := hj.Hijack()
			bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
			bw.Write(body[:len(body)/2])
			bw.Flush()
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			conn.Close()
			resets.Add(1)
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(func() {
		ts.Close()
		t.Logf("%d connections reset mid-download", resets.Load())
	})
	return ts.URL
}

// TestConnectionResetMidDownload: patches and full bundles cut off by a
// reset; the device falls back to single files and installs exactly.
func TestConnectionResetMidDownload(t *testing.T) {
	s := newStack(t)
	big := strings.Repeat("export const x = 42;\n", 5000)
	v1 := map[string]string{"index.html": "<html>1</html>", "app.js": big}
	v2 := map[string]string{"index.html": "<html>2</html>", "app.js": big + "//2\n"}
	s.upload(t, "1.0.0", v1)
	front := resetProxy(t, s.proxy, func(p string) bool { return strings.HasPrefix(p, "/v1/patches/") })
	d, err := device.New(device.Config{Dir: t.TempDir(), Edges: []string{front}, App: "com.x", Channel: "production"})
	if err != nil {
		t.Fatal(err)
	}
	res := d.Update(context.Background())
	if res.Status != device.StatusUpdated || res.Mode != device.ModeFiles {
		t.Fatalf("first install through resets: %+v", res)
	}
	assertFiles(t, filepath.Join(device.DirOf(d), "current"), v1)
	s.upload(t, "1.1.0", v2)
	res = d.Update(context.Background())
	if res.Status != device.StatusUpdated || res.Mode != device.ModeFiles {
		t.Fatalf("update through resets: %+v", res)
	}
	assertFiles(t, filepath.Join(device.DirOf(d), "current"), v2)

	// With every download reset, the update fails clearly and the
	// installed bundle stays whole.
	s.upload(t, "1.2.0", map[string]string{"index.html": "<html>3</html>", "app.js": big + "//3\n"})
	all := resetProxy(t, s.proxy, func(p string) bool { return strings.HasPrefix(p, "/v1/patches/") || strings.HasPrefix(p, "/v1/blobs/") })
	d2, err := device.New(device.Config{Dir: device.DirOf(d), Edges: []string{all}, App: "com.x", Channel: "production"})
	if err != nil {
		t.Fatal(err)
	}
	res = d2.Update(context.Background())
	if res.Status != device.StatusFailed || res.Error == "" {
		t.Fatalf("every download reset: %+v", res)
	}
	assertFiles(t, filepath.Join(device.DirOf(d), "current"), v2)
}
