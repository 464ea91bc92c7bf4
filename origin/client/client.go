// Package client is the Go client of the origin's CI and operator API, used
// by the capstan command line and by tests and benchmarks.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// Client talks to the origins of one cluster.
type Client struct {
	// Server is the origin's base URL, e.g. http://127.0.0.1:7070, or
	// several separated by commas (origins sharing a store): a request
	// goes to the first that can take it, the next when one cannot be
	// reached or answers 503.
	Server string
	// APIKey authenticates every request.
	APIKey string
	// HTTP is the client used; nil means http.DefaultClient's zero-timeout
	// behaviour is replaced by a plain &http.Client{}.
	HTTP *http.Client
	// RetryFor is how long a request is tried again while every origin
	// answers 503 (its database or bucket away, nothing committed): a
	// store restarting is waited out. Zero means 30 seconds; negative
	// means no retry. Origins that cannot be reached at all fail at once.
	RetryFor time.Duration
}

// Error is an error answer from the origin.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// IsConflict reports whether err is a 409 answer (a version that exists).
func IsConflict(err error) bool {
	var ae *Error
	return errors.As(err, &ae) && ae.Status == http.StatusConflict
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{}
}

// servers are the origin URLs to try, in order.
func (c *Client) servers() []string {
	var out []string
	for _, s := range strings.Split(c.Server, ",") {
		if s = strings.TrimRight(strings.TrimSpace(s), "/"); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}

// request is one API call, sendable more than once.
type request struct {
	method, path string
	// body makes a fresh body for each attempt (nil: none) and returns
	// its content type and what releases it.
	body func() (io.Reader, string, func(), error)
	// header is added to every attempt.
	header http.Header
	// resend says the request may go to another origin even after it was
	// (partly) sent: reads, and uploads carrying an idempotency key.
	resend bool
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	r := request{method: method, path: path, resend: method == http.MethodGet}
	if body != nil {
		b, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		r.body = func() (io.Reader, string, func(), error) { return bytes.NewReader(b), contentType, func() {}, nil }
	}
	return c.send(ctx, r, out)
}

// send tries the origins in order until one answers. Unreachable origins
// and 503 answers move on to the next; when every origin answered 503 the
// round is repeated, with backoff, for RetryFor.
func (c *Client) send(ctx context.Context, r request, out any) error {
	retryFor := c.RetryFor
	if retryFor == 0 {
		retryFor = 30 * time.Second
	}
	deadline := time.Now().Add(retryFor)
	wait := 250 * time.Millisecond
	for {
		var lastErr error
		unavailable := false
		for _, srv := range c.servers() {
			next, busy, err := c.try(ctx, srv, r, out)
			if !next {
				return err
			}
			lastErr, unavailable = err, unavailable || busy
		}
		if !unavailable || retryFor < 0 || time.Now().Add(wait).After(deadline) {
			return lastErr
		}
		select {
		case <-ctx.Done():
			return lastErr
		case <-time.After(wait):
		}
		wait = min(2*wait, 4*time.Second)
	}
}

// try sends r to one origin. next says another origin may be tried; busy
// says the origin answered but could not serve now (503).
func (c *Client) try(ctx context.Context, server string, r request, out any) (next, busy bool, err error) {
	var body io.Reader
	contentType, release := "", func() {}
	if r.body != nil {
		if body, contentType, release, err = r.body(); err != nil {
			return false, false, err
		}
	}
	defer release()
	req, err := http.NewRequestWithContext(ctx, r.method, server+r.path, body)
	if err != nil {
		return false, false, err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		err = fmt.Errorf("cannot reach the origin at %s (set CAPSTAN_SERVER?): %w", server, err)
		// Nothing was sent when the connection could not be made: any
		// request may go to the next origin. Once sent, only those that
		// are safe to repeat may.
		var op *net.OpError
		dialFailed := errors.As(err, &op) && op.Op == "dial"
		return ctx.Err() == nil && (dialFailed || r.resend), false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return ctx.Err() == nil && r.resend, false, fmt.Errorf("read answer from %s: %w", server, err)
	}
	if resp.StatusCode >= 300 {
		var ae wire.Error
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
			msg = ae.Error
		}
		err := &Error{Status: resp.StatusCode, Message: fmt.Sprintf("origin refused (%d): %s", resp.StatusCode, msg)}
		if resp.Header.Get("Server") == "capstan-edge" {
			err.Message = fmt.Sprintf("%s is an edge, not the origin API (it answered %d to %s %s): CAPSTAN_SERVER (or --server) must be the origin's API URL, which capstan dev prints as \"origin API …\" (:7070 by default)",
				server, resp.StatusCode, r.method, r.path)
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			return true, true, err
		}
		return false, false, err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return false, false, fmt.Errorf("malformed answer from %s: %w", server, err)
		}
	}
	return false, false, nil
}

// Upload describes one upload.
type Upload struct {
	App, Version, MinNative, Channel string
	// Rollout is a percentage; empty means 100.
	Rollout string
	// NewChannel allows Channel to be a channel the app does not have yet.
	NewChannel bool
	// Envelope is the signed manifest, if the release is signed.
	Envelope *release.Envelope
	// Bundle is the zip to send.
	Bundle io.Reader
	// Capgo and CapgoZip, if set, are a Capgo-encrypted copy of the bundle
	// (the strings and the encrypted zip) for @capgo/capacitor-updater
	// devices; see capgokey.EncryptBundle.
	Capgo    *capgo.Encrypted
	CapgoZip io.Reader
	// Warnings, if set, receives the origin's warnings about the release
	// (for example the share of the fleet too old to run it).
	Warnings *[]string
}

// UploadRelease sends a bundle as a new release.
func (c *Client) UploadRelease(ctx context.Context, u Upload) (*release.Record, error) {
	q := url.Values{}
	q.Set("version", u.Version)
	if u.Channel != "" {
		q.Set("channel", u.Channel)
	}
	if u.Rollout != "" {
		q.Set("rollout", u.Rollout)
	}
	if u.NewChannel {
		q.Set("new_channel", "1")
	}
	if u.MinNative != "" {
		q.Set("min_native", u.MinNative)
	}
	// The body is made again for each attempt (another origin, a retry
	// after a 503), rewinding the bundle; the idempotency key stays, so an
	// attempt that was committed although its answer was lost is answered
	// with the stored release rather than a 409.
	seekers := []io.Reader{u.Bundle, u.CapgoZip}
	rewindable := true
	for _, r := range seekers {
		if _, ok := r.(io.Seeker); r != nil && !ok {
			rewindable = false
		}
	}
	attempts := 0
	body := func() (io.Reader, string, func(), error) {
		attempts++
		if attempts > 1 {
			if !rewindable {
				return nil, "", nil, errors.New("the upload failed and its bundle cannot be read again to retry it")
			}
			for _, r := range seekers {
				if sk, ok := r.(io.Seeker); ok {
					if _, err := sk.Seek(0, io.SeekStart); err != nil {
						return nil, "", nil, err
					}
				}
			}
		}
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		go func() {
			err := func() error {
				if u.Envelope != nil {
					w, err := mw.CreateFormField("manifest")
					if err != nil {
						return err
					}
					if err := json.NewEncoder(w).Encode(u.Envelope); err != nil {
						return err
					}
				}
				if err := writeCapgoParts(mw, u.Capgo, u.CapgoZip); err != nil {
					return err
				}
				w, err := mw.CreateFormFile("bundle", "bundle.zip")
				if err != nil {
					return err
				}
				if _, err := io.Copy(w, u.Bundle); err != nil {
					return err
				}
				return mw.Close()
			}()
			pw.CloseWithError(err)
		}()
		return pr, mw.FormDataContentType(), func() { pr.CloseWithError(io.ErrClosedPipe) }, nil
	}
	var key [16]byte
	rand.Read(key[:])
	var rec wire.UploadAnswer
	err := c.send(ctx, request{
		method: http.MethodPost, path: "/v1/apps/" + url.PathEscape(u.App) + "/releases?" + q.Encode(),
		body: body, header: http.Header{"Idempotency-Key": {hex.EncodeToString(key[:])}}, resend: rewindable,
	}, &rec)
	if err != nil {
		return nil, err
	}
	if u.Warnings != nil {
		*u.Warnings = append((*u.Warnings)[:0], rec.Warnings...)
	}
	return &rec.Record, nil
}

// SetChannel points a channel at a version with a rollout percentage
// (nil keeps the current one) and optional pause state.
func (c *Client) SetChannel(ctx context.Context, app, channel, version string, rollout *float64, paused *bool) (*wire.ChannelView, error) {
	return c.UpdateChannel(ctx, app, channel, wire.SetChannelBody{Version: version, Rollout: rollout, Paused: paused})
}

// Rollback puts the previous (or named) release back on a channel.
func (c *Client) Rollback(ctx context.Context, app, channel, to string) (*wire.ChannelView, error) {
	var out wire.ChannelView
	err := c.Do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(app)+"/channels/"+url.PathEscape(channel)+"/rollback", wire.RollbackBody{To: to}, &out)
	return &out, err
}

// Channels lists an app's channels.
func (c *Client) Channels(ctx context.Context, app string) ([]wire.ChannelView, error) {
	var out struct {
		Channels []wire.ChannelView `json:"channels"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(app)+"/channels", nil, "", &out)
	return out.Channels, err
}

// Releases lists an app's releases, newest first.
func (c *Client) Releases(ctx context.Context, app string) ([]release.Record, error) {
	var out struct {
		Releases []release.Record `json:"releases"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(app)+"/releases", nil, "", &out)
	return out.Releases, err
}

// Do sends a raw API request and decodes a JSON answer into out; it is the
// escape hatch for endpoints without a typed method.
func (c *Client) Do(ctx context.Context, method, path string, body any, out any) error {
	var r io.Reader
	ct := ""
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r, ct = strings.NewReader(string(b)), "application/json"
	}
	return c.do(ctx, method, path, r, ct, out)
}
