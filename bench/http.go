package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Errors the bench classifies; the result counts them by kind.
var (
	// ErrVerify is a downloaded object or answer that does not match what
	// the signed documents say.
	ErrVerify = errors.New("bench: verification failed")
	// ErrNoEdge is a session in which no edge gave a usable answer.
	ErrNoEdge = errors.New("bench: no edge answered")
	// ErrNoPatch is a patch the edge does not have (404).
	ErrNoPatch = errors.New("bench: no patch for this release pair")
)

// statusError is a non-2xx answer.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("bench: HTTP %d: %s", e.code, e.body)
}

// errKind names the class of err for the error counters.
func errKind(err error) string {
	var se *statusError
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &se):
		return "http_" + strconv.Itoa(se.code)
	case errors.Is(err, ErrVerify):
		return "verify"
	case errors.Is(err, ErrNoPatch):
		return "no_patch"
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return "too_large"
	}
	if strings.Contains(err.Error(), "decode") {
		return "decode"
	}
	return "other"
}

// newHTTPClient returns a client with room for every session in flight.
func newHTTPClient(conns int, timeout time.Duration) *fasthttp.Client {
	return &fasthttp.Client{
		Name:                "capstan-bench",
		MaxConnsPerHost:     conns,
		MaxIdleConnDuration: 30 * time.Second,
		ReadTimeout:         timeout,
		WriteTimeout:        timeout,
		// A whole bundle of a large app fits; a hostile edge cannot make
		// the bench buffer more.
		MaxResponseBodySize: 256 << 20,
		ReadBufferSize:      16 << 10,
		// Wait for a free connection instead of failing with
		// ErrNoFreeConns: the wait is queueing the latency should show.
		MaxConnWaitTimeout: timeout,
		Dial:               (&fasthttp.TCPDialer{Concurrency: 0}).Dial,
	}
}

// response is what get hands to its consumer; Body is only valid inside
// the consumer (fasthttp reuses the buffer afterwards).
type response struct {
	Status int
	Body   []byte
	ETag   string
}

// get sends GET url and calls consume with a 200 answer. It returns the
// bytes of the body received, whatever the status.
func get(ctx context.Context, c *fasthttp.Client, url string, timeout time.Duration, consume func(*response) error) (int64, error) {
	return do(ctx, c, fasthttp.MethodGet, url, nil, timeout, consume)
}

// do sends one request. fasthttp's client takes no context, so ctx is
// honoured through the timeout: the request never outlives ctx's deadline,
// and is not sent once ctx is done.
func do(ctx context.Context, c *fasthttp.Client, method, url string, body []byte, timeout time.Duration, consume func(*response) error) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod(method)
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	if err := c.DoTimeout(req, resp, timeout); err != nil {
		return 0, err
	}
	b := resp.Body()
	n := int64(len(b))
	if code := resp.StatusCode(); code < 200 || code > 299 {
		msg := b
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return n, &statusError{code: code, body: string(bytes.TrimSpace(msg))}
	}
	if consume == nil {
		return n, nil
	}
	etag := string(bytes.Trim(resp.Header.Peek("ETag"), `"`))
	return n, consume(&response{Status: resp.StatusCode(), Body: b, ETag: etag})
}
