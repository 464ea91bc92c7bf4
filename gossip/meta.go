package gossip

import (
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/hashicorp/memberlist"
)

// Role is what a node does in the fleet.
type Role string

// The roles a node can announce.
const (
	RoleOrigin Role = "origin"
	RoleEdge   Role = "edge"
)

// Limits on the fields of Meta. Their sum stays well under memberlist's
// 512-byte NodeMeta limit (MetaMaxSize), above which memberlist panics.
const (
	MaxHTTPLen   = 256
	MaxRegionLen = 64
)

// Meta is what a node says about itself to the cluster. It travels in
// memberlist's NodeMeta, which every member sees.
type Meta struct {
	// Role is RoleOrigin or RoleEdge.
	Role Role
	// HTTP is the advertised base URL of the node's HTTP API, e.g.
	// "http://127.0.0.1:7080". Empty if the node serves none.
	HTTP string
	// Region is a free-form location label ("eu-west"), may be empty.
	Region string
}

// metaWire is the encoding of Meta: short keys and a version, because it is
// repeated in every alive message.
type metaWire struct {
	V      int    `json:"v"`
	Role   Role   `json:"r"`
	HTTP   string `json:"h,omitempty"`
	Region string `json:"g,omitempty"`
}

const metaVersion = 1

// Validate checks the role, the URL and the lengths, and that the encoding
// fits memberlist's NodeMeta limit.
func (m Meta) Validate() error {
	_, err := m.encode()
	return err
}

func (m Meta) check() error {
	switch m.Role {
	case RoleOrigin, RoleEdge:
	default:
		return fmt.Errorf("gossip: meta: unknown role %q (want %q or %q)", m.Role, RoleOrigin, RoleEdge)
	}
	if len(m.HTTP) > MaxHTTPLen {
		return fmt.Errorf("gossip: meta: HTTP address of %d bytes is over %d", len(m.HTTP), MaxHTTPLen)
	}
	if m.HTTP != "" {
		u, err := url.Parse(m.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("gossip: meta: HTTP address %q is not an http(s) base URL", m.HTTP)
		}
	}
	if len(m.Region) > MaxRegionLen {
		return fmt.Errorf("gossip: meta: region of %d bytes is over %d", len(m.Region), MaxRegionLen)
	}
	return nil
}

// encode validates m and returns its NodeMeta bytes.
func (m Meta) encode() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(metaWire{V: metaVersion, Role: m.Role, HTTP: m.HTTP, Region: m.Region})
	if err != nil {
		return nil, fmt.Errorf("gossip: meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip: meta: encoding of %d bytes is over memberlist's %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// decodeMeta parses another node's NodeMeta. Unknown versions and bad
// fields are errors; the caller shows such a node with an empty Meta.
func decodeMeta(b []byte) (Meta, error) {
	if len(b) > memberlist.MetaMaxSize {
		return Meta{}, fmt.Errorf("gossip: meta of %d bytes is over %d", len(b), memberlist.MetaMaxSize)
	}
	var w metaWire
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{}, fmt.Errorf("gossip: meta: %w", err)
	}
	if w.V != metaVersion {
		return Meta{}, fmt.Errorf("gossip: meta version %d, want %d", w.V, metaVersion)
	}
	m := Meta{Role: w.Role, HTTP: w.HTTP, Region: w.Region}
	if err := m.check(); err != nil {
		return Meta{}, err
	}
	return m, nil
}

// Member is one node of the cluster as seen from this node.
type Member struct {
	// Name is the node's unique name.
	Name string
	// Addr is the node's gossip address, "host:port".
	Addr string
	// Meta is what the node announced; zero if it announced nothing this
	// version understands.
	Meta Meta
}
