package httpenc

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestChoose(t *testing.T) {
	for accept, want := range map[string]string{
		"":                        "",
		"identity":                "",
		"gzip":                    "gzip",
		"gzip, deflate, br":       "br",
		"gzip, deflate, br, zstd": "zstd",
		"br;q=0.5, gzip;q=1.0":    "br",
		"zstd;q=0, br;q=0, gzip":  "gzip",
		"gzip;q=0":                "",
		"gzip;q=0.000":            "",
		"GZIP":                    "gzip",
		"x-gzip":                  "gzip",
		"*":                       "gzip",
		"deflate":                 "",
	} {
		if got := Choose(accept); got != want {
			t.Errorf("Choose(%q) = %q, want %q", accept, got, want)
		}
	}
	if got := ChooseBytes([]byte("br")); got != "br" {
		t.Errorf("ChooseBytes: %q", got)
	}
}

func TestHandlerCompressesOnlyLargeJSON(t *testing.T) {
	big := `{"x":"` + strings.Repeat("abc", 1000) + `"}`
	h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, big)
		case "/small":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"ok":true}`)
		case "/blob":
			w.Header().Set("Content-Type", "application/octet-stream")
			io.WriteString(w, strings.Repeat("z", 5000))
		case "/error":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, big)
		}
	}))
	for path, wantEnc := range map[string]string{"/big": "gzip", "/small": "", "/blob": "", "/error": "gzip"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		h.ServeHTTP(rec, req)
		if got := rec.Header().Get("Content-Encoding"); got != wantEnc {
			t.Fatalf("%s: Content-Encoding %q, want %q", path, got, wantEnc)
		}
		if wantEnc == "" {
			continue
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(zr)
		if string(b) != big {
			t.Fatalf("%s does not decode to the answer", path)
		}
		if path == "/error" && rec.Code != http.StatusNotFound {
			t.Fatalf("status %d", rec.Code)
		}
	}
}

func TestVariantsComputedOnce(t *testing.T) {
	var v Variants
	body := bytes.Repeat([]byte(`{"a":1},`), 500)
	a := v.Get(Zstd, body)
	b := v.Get(Zstd, body)
	if &a[0] != &b[0] || len(a) >= len(body) {
		t.Fatal("the zstd form was not kept, or is not smaller")
	}
	if small := []byte(`{}`); &v.Get(Gzip, small)[0] != &small[0] {
		t.Fatal("a small body was compressed")
	}
}
