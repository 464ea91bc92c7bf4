// Package client is the Go client of the origin's CI and operator API, used
// by the capstan command line and by tests and benchmarks.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"

	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/release"
)

// Client talks to one origin.
type Client struct {
	// Server is the origin's base URL, e.g. http://127.0.0.1:7070.
	Server string
	// APIKey authenticates every request.
	APIKey string
	// HTTP is the client used; nil means http.DefaultClient's zero-timeout
	// behaviour is replaced by a plain &http.Client{}.
	HTTP *http.Client
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

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Server, "/")+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the origin at %s (set CAPSTAN_SERVER?): %w", c.Server, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", c.Server, err)
	}
	if resp.StatusCode >= 300 {
		var ae struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
			msg = ae.Error
		}
		return &Error{Status: resp.StatusCode, Message: fmt.Sprintf("origin refused (%d): %s", resp.StatusCode, msg)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("malformed answer from %s: %w", c.Server, err)
		}
	}
	return nil
}

// Upload describes one upload.
type Upload struct {
	App, Version, MinNative, Channel string
	// Rollout is a percentage; empty means 100.
	Rollout string
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
	if u.MinNative != "" {
		q.Set("min_native", u.MinNative)
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
	var rec struct {
		release.Record
		Warnings []string `json:"warnings"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(u.App)+"/releases?"+q.Encode(), pr, mw.FormDataContentType(), &rec)
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		return nil, err
	}
	if u.Warnings != nil {
		*u.Warnings = rec.Warnings
	}
	return &rec.Record, nil
}

// ChannelView is a channel as the API shows it.
type ChannelView struct {
	release.Channel
	Envelope *release.Envelope `json:"envelope"`
}

// SetChannel points a channel at a version with a rollout percentage
// (nil keeps the current one) and optional pause state.
func (c *Client) SetChannel(ctx context.Context, app, channel, version string, rollout *float64, paused *bool) (*ChannelView, error) {
	body, _ := json.Marshal(struct {
		Version string   `json:"version,omitempty"`
		Rollout *float64 `json:"rollout,omitempty"`
		Paused  *bool    `json:"paused,omitempty"`
	}{version, rollout, paused})
	var out ChannelView
	err := c.do(ctx, http.MethodPut, "/v1/apps/"+url.PathEscape(app)+"/channels/"+url.PathEscape(channel), strings.NewReader(string(body)), "application/json", &out)
	return &out, err
}

// Rollback puts the previous (or named) release back on a channel.
func (c *Client) Rollback(ctx context.Context, app, channel, to string) (*ChannelView, error) {
	body, _ := json.Marshal(map[string]string{"to": to})
	var out ChannelView
	err := c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(app)+"/channels/"+url.PathEscape(channel)+"/rollback", strings.NewReader(string(body)), "application/json", &out)
	return &out, err
}

// Channels lists an app's channels.
func (c *Client) Channels(ctx context.Context, app string) ([]ChannelView, error) {
	var out struct {
		Channels []ChannelView `json:"channels"`
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
