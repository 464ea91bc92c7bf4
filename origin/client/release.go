package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/capstan-ota/capstan/wire"
)

// UpdateChannel applies a change to a channel and returns its new record.
func (c *Client) UpdateChannel(ctx context.Context, app, channel string, ch wire.SetChannelBody) (*wire.ChannelView, error) {
	var out wire.ChannelView
	err := c.Do(ctx, http.MethodPut, "/v1/apps/"+url.PathEscape(app)+"/channels/"+url.PathEscape(channel), ch, &out)
	return &out, err
}

// SetChannelPolicy stores a channel's auto-pause overrides.
func (c *Client) SetChannelPolicy(ctx context.Context, app, channel string, p wire.ChannelPolicy) (*wire.ChannelPolicy, error) {
	var out wire.ChannelPolicy
	err := c.Do(ctx, http.MethodPut, "/v1/apps/"+url.PathEscape(app)+"/channels/"+url.PathEscape(channel)+"/policy", p, &out)
	return &out, err
}

// Promote points channel to at the release channel from serves; rollout
// is a percentage (nil: 100). newChannel allows to to be a new channel.
func (c *Client) Promote(ctx context.Context, app, from, to string, rollout *float64, newChannel bool) (*wire.ChannelView, error) {
	var out wire.ChannelView
	err := c.Do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(app)+"/channels/"+url.PathEscape(to)+"/promote",
		wire.PromoteBody{From: from, Rollout: rollout, NewChannel: newChannel}, &out)
	return &out, err
}

// Stats returns an app's release counters, for one channel or all ("").
func (c *Client) Stats(ctx context.Context, app, channel string) (*wire.StatsReport, error) {
	path := "/v1/apps/" + url.PathEscape(app) + "/stats"
	if channel != "" {
		path += "?channel=" + url.QueryEscape(channel)
	}
	var out wire.StatsReport
	err := c.Do(ctx, http.MethodGet, path, nil, &out)
	return &out, err
}
