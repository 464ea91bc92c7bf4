package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"

	"github.com/capstan-ota/capstan/capgo"
)

// writeCapgoParts writes the Capgo parts of an upload. They go before the
// bundle part, which the origin reads last.
func writeCapgoParts(mw *multipart.Writer, enc *capgo.Encrypted, zip io.Reader) error {
	if enc == nil && zip == nil {
		return nil
	}
	if enc == nil || zip == nil {
		return errors.New("client: a Capgo upload needs both the strings and the encrypted zip")
	}
	w, err := mw.CreateFormField("capgo")
	if err != nil {
		return err
	}
	if err := json.NewEncoder(w).Encode(enc); err != nil {
		return err
	}
	fw, err := mw.CreateFormFile("capgo_zip", "bundle.zip.enc")
	if err != nil {
		return err
	}
	_, err = io.Copy(fw, zip)
	return err
}

// CapgoConfig returns an app's Capgo settings.
func (c *Client) CapgoConfig(ctx context.Context, app string) (*capgo.AppConfig, error) {
	var cfg capgo.AppConfig
	if err := c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(app)+"/capgo", nil, "", &cfg); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// SetCapgoConfig replaces an app's Capgo settings.
func (c *Client) SetCapgoConfig(ctx context.Context, app string, cfg *capgo.AppConfig) (*capgo.AppConfig, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var out capgo.AppConfig
	if err := c.do(ctx, http.MethodPut, "/v1/apps/"+url.PathEscape(app)+"/capgo", strings.NewReader(string(b)), "application/json", &out); err != nil {
		return nil, err
	}
	return &out, nil
}
