package httpenc

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
)

// Handler wraps a net/http handler so that its JSON answers (Content-Type
// application/json) over MinSize bytes go out compressed when the client
// accepts it. Other answers (blobs, patches, metrics, event streams) pass
// through untouched and unbuffered; JSON answers are buffered whole, which
// API answers, being bounded, allow.
func Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		enc := Choose(r.Header.Get("Accept-Encoding"))
		if enc == "" || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		jw := &jsonWriter{ResponseWriter: w, enc: enc}
		next.ServeHTTP(jw, r)
		jw.finish()
	})
}

// jsonWriter buffers a JSON answer to compress it at the end.
type jsonWriter struct {
	http.ResponseWriter
	enc     string
	status  int
	decided bool
	buffer  bool
	buf     bytes.Buffer
}

func (j *jsonWriter) WriteHeader(code int) {
	if j.decided {
		return
	}
	j.decided = true
	h := j.Header()
	j.buffer = code == http.StatusOK || code >= 400 && code != http.StatusNoContent
	j.buffer = j.buffer && strings.HasPrefix(h.Get("Content-Type"), "application/json") && h.Get("Content-Encoding") == ""
	if !j.buffer {
		j.ResponseWriter.WriteHeader(code)
		return
	}
	j.status = code
}

func (j *jsonWriter) Write(p []byte) (int, error) {
	if !j.decided {
		j.WriteHeader(http.StatusOK)
	}
	if !j.buffer {
		return j.ResponseWriter.Write(p)
	}
	return j.buf.Write(p)
}

// Unwrap lets http.ResponseController reach the real writer.
func (j *jsonWriter) Unwrap() http.ResponseWriter { return j.ResponseWriter }

func (j *jsonWriter) finish() {
	if !j.buffer {
		return
	}
	body := j.buf.Bytes()
	h := j.Header()
	h.Add("Vary", "Accept-Encoding")
	if len(body) > MinSize {
		body = Encode(j.enc, body, Fast)
		h.Set("Content-Encoding", j.enc)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	j.ResponseWriter.WriteHeader(j.status)
	j.ResponseWriter.Write(body)
}
