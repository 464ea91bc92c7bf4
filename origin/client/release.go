package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/capstan-ota/capstan/origin"
)

// ChannelChange is a change to a channel; nil fields keep their value.
type ChannelChange struct {
	Version string   `json:"version,omitempty"`
	Rollout *float64 `json:"rollout,omitempty"` // percent
	Paused  *bool    `json:"paused,omitempty"`
	// BlockMajor, DeviceSelect and Default set the channel flags of the
	// same names (see release.Channel).
	BlockMajor   *bool `json:"block_major,omitempty"`
	DeviceSelect *bool `json:"device_select,omitempty"`
	Default      *bool `json:"default,omitempty"`
	// NewChannel allows a channel the app does not have yet.
	NewChannel bool `json:"new_channel,omitempty"`
}

// UpdateChannel applies a change to a channel and returns its new record.
func (c *Client) UpdateChannel(ctx context.Context, app, channel string, ch ChannelChange) (*ChannelView, error) {
	var out ChannelView
	err := c.Do(ctx, http.MethodPut, "/v1/apps/"+url.PathEscape(app)+"/channels/"+url.PathEscape(channel), ch, &out)
	return &out, err
}

// SetChannelPolicy stores a channel's auto-pause overrides.
func (c *Client) SetChannelPolicy(ctx context.Context, app, channel string, p origin.ChannelPolicy) (*origin.ChannelPolicy, error) {
	var out origin.ChannelPolicy
	err := c.Do(ctx, http.MethodPut, "/v1/apps/"+url.PathEscape(app)+"/channels/"+url.PathEscape(channel)+"/policy", p, &out)
	return &out, err
}

// Promote points channel to at the release channel from serves; rollout
// is a percentage (nil: 100). newChannel allows to to be a new channel.
func (c *Client) Promote(ctx context.Context, app, from, to string, rollout *float64, newChannel bool) (*ChannelView, error) {
	var out ChannelView
	err := c.Do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(app)+"/channels/"+url.PathEscape(to)+"/promote",
		origin.PromoteBody{From: from, Rollout: rollout, NewChannel: newChannel}, &out)
	return &out, err
}

// Stats returns an app's release counters, for one channel or all ("").
func (c *Client) Stats(ctx context.Context, app, channel string) (*origin.StatsReport, error) {
	path := "/v1/apps/" + url.PathEscape(app) + "/stats"
	if channel != "" {
		path += "?channel=" + url.QueryEscape(channel)
	}
	var out origin.StatsReport
	err := c.Do(ctx, http.MethodGet, path, nil, &out)
	return &out, err
}
