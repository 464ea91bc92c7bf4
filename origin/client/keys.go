package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/capstan-ota/capstan/wire"
)

// CreateKey creates an API key (admin); the answer holds its secret, which
// the origin never shows again.
func (c *Client) CreateKey(ctx context.Context, body wire.CreateKeyBody) (*wire.CreatedKey, error) {
	var out wire.CreatedKey
	if err := c.Do(ctx, http.MethodPost, "/v1/keys", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Keys lists the API keys (admin), without their secrets.
func (c *Client) Keys(ctx context.Context) ([]wire.APIKey, error) {
	var out struct {
		Keys []wire.APIKey `json:"keys"`
	}
	err := c.Do(ctx, http.MethodGet, "/v1/keys", nil, &out)
	return out.Keys, err
}

// RevokeKey revokes the API key with this ID (admin).
func (c *Client) RevokeKey(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(id), nil, nil)
}

// App returns an app's trust settings.
func (c *Client) App(ctx context.Context, app string) (*wire.AppView, error) {
	var out wire.AppView
	if err := c.Do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(app), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetApp changes an app's trust settings (admin), creating the app if it
// does not exist yet.
func (c *Client) SetApp(ctx context.Context, app string, in wire.AppSettings) (*wire.AppView, error) {
	var out wire.AppView
	if err := c.Do(ctx, http.MethodPut, "/v1/apps/"+url.PathEscape(app), in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GC runs one garbage collection pass on the origin now (admin).
func (c *Client) GC(ctx context.Context, body wire.GCBody) (*wire.GCReport, error) {
	var out wire.GCReport
	if err := c.Do(ctx, http.MethodPost, "/v1/gc", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
