package stats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/capstan-ota/capstan/release"
)

// Actions a device reports.
const (
	// ActionCheck: the device asked for an update; Release is what it runs.
	ActionCheck = "check"
	// ActionDownload: the device downloaded Release; Bytes says how much.
	ActionDownload = "download"
	// ActionInstall: the device swapped Release in; it is pending until
	// the app confirms it.
	ActionInstall = "install"
	// ActionConfirm: the app confirmed Release healthy.
	ActionConfirm = "confirm"
	// ActionFail: downloading, verifying or installing Release failed;
	// Cause says which.
	ActionFail = "fail"
	// ActionRevert: Release was not confirmed in time and the device went
	// back to its previous release; Release will not be installed again.
	ActionRevert = "revert"
)

// Causes of a fail event. Only a failure that may be the release's fault
// (not CauseDownload) counts towards its failure rate: an origin outage
// must not auto-pause a healthy rollout.
const (
	CauseDownload = "download" // no edge delivered the bytes (network, 5xx, timeouts)
	CauseVerify   = "verify"   // bytes arrived but did not match the signed manifest
	CauseInstall  = "install"  // the device could not install (disk, file system)
)

// Limits on what a device or an edge may send.
const (
	// MaxDeviceBatch bounds the events of one device request.
	MaxDeviceBatch = 200
	// MaxDeviceBody bounds the body of one device request in bytes.
	MaxDeviceBody = 64 << 10
	// MaxEdgeBatch bounds the events of one edge-to-origin request.
	MaxEdgeBatch = 2000
	// MaxEdgeBody bounds the body of one edge-to-origin request in bytes.
	MaxEdgeBody = 2 << 20
	// MaxDeviceIDLen bounds a device id, as the edge's check does.
	MaxDeviceIDLen = 128
	// MaxErrorLen bounds the error text an event carries; longer text is cut.
	MaxErrorLen = 256
)

// Event is one thing that happened on a device.
type Event struct {
	Action  string `json:"action"`
	App     string `json:"app"`
	Channel string `json:"channel"`
	Device  string `json:"device"`
	// Release is the release the event is about; zero is the bundle built
	// into the app.
	Release release.Hash `json:"release"`
	Version string       `json:"version,omitempty"`
	// Bytes is what a download cost, in bytes.
	Bytes int64 `json:"bytes,omitempty"`
	// Time is when it happened on the device, in Unix milliseconds.
	Time  int64  `json:"time,omitempty"`
	Error string `json:"error,omitempty"`
	// Native is the version of the device's native app shell (sent with
	// checks): the origin keeps a census of them to warn an upload that
	// would be blocked for part of the fleet.
	Native string `json:"native,omitempty"`
	// Cause classifies a fail event (Cause…); empty counts as a failure
	// of the release.
	Cause string `json:"cause,omitempty"`
	// Addr is the network address the event came from (an IPv4 address,
	// or an IPv6 /64), set by the edge that took it from the device —
	// whatever the device sent is overwritten — and by the origin for
	// events posted to it by anyone but an edge of its cluster. Auto-pause
	// needs failures from many addresses, not only many device ids, which
	// anyone can make up (issue 16, finding 4).
	Addr string `json:"addr,omitempty"`
	// Count is how many identical check events this one stands for (0 and
	// 1 mean one): an edge folds a device's repeated checks into one event
	// rather than forwarding each. Only checks carry it.
	Count int64 `json:"count,omitempty"`
}

// MaxCount bounds Event.Count.
const MaxCount = 1 << 30

// N is the number of events e stands for (Count, at least 1).
func (e *Event) N() uint64 {
	if e.Count > 1 {
		return uint64(e.Count)
	}
	return 1
}

// ErrBadEvent is wrapped by every validation error of this package.
var ErrBadEvent = errors.New("stats: bad event")

// Validate checks an event's fields and cuts an over-long error text.
func (e *Event) Validate() error {
	switch e.Action {
	case ActionCheck, ActionDownload, ActionInstall, ActionConfirm, ActionFail, ActionRevert:
	default:
		return fmt.Errorf("%w: unknown action %q", ErrBadEvent, e.Action)
	}
	if err := release.ValidateApp(e.App); err != nil {
		return fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	if err := release.ValidateChannel(e.Channel); err != nil {
		return fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	if e.Device == "" || len(e.Device) > MaxDeviceIDLen {
		return fmt.Errorf("%w: device id must be 1 to %d bytes", ErrBadEvent, MaxDeviceIDLen)
	}
	switch e.Cause {
	case "", CauseDownload, CauseVerify, CauseInstall:
	default:
		return fmt.Errorf("%w: unknown cause %q", ErrBadEvent, e.Cause)
	}
	if len(e.Version) > release.MaxVersionLen {
		return fmt.Errorf("%w: version is over %d bytes", ErrBadEvent, release.MaxVersionLen)
	}
	if len(e.Native) > release.MaxVersionLen {
		return fmt.Errorf("%w: native version is over %d bytes", ErrBadEvent, release.MaxVersionLen)
	}
	if e.Bytes < 0 || e.Bytes > 1<<40 {
		return fmt.Errorf("%w: bytes %d out of range", ErrBadEvent, e.Bytes)
	}
	if e.Count < 0 || e.Count > MaxCount || e.Count > 1 && e.Action != ActionCheck {
		return fmt.Errorf("%w: count %d: only checks are counted, up to %d", ErrBadEvent, e.Count, MaxCount)
	}
	if len(e.Addr) > MaxAddrLen {
		return fmt.Errorf("%w: address is over %d bytes", ErrBadEvent, MaxAddrLen)
	}
	if len(e.Error) > MaxErrorLen {
		e.Error = e.Error[:MaxErrorLen]
	}
	return nil
}

// MaxAddrLen bounds Event.Addr ("ffff:ffff:ffff:ffff::/64" is 24 bytes).
const MaxAddrLen = 64

// AddrOf is the Event.Addr of a client address: the IPv4 address, or the
// /64 of an IPv6 one (one subscriber's allocation, which a client can
// otherwise rotate through freely).
func AddrOf(a netip.Addr) string {
	a = a.Unmap()
	if !a.IsValid() {
		return ""
	}
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// DecodeBatch parses a JSON array of events, or a single event object (as
// Capgo's plugin sometimes sends), refusing more than max events. Invalid
// events are dropped and counted, not fatal: one bad event does not lose
// the batch.
func DecodeBatch(b []byte, max int) (events []Event, dropped int, err error) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		b = append(append([]byte{'['}, b...), ']')
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, 0, fmt.Errorf("%w: body must be a JSON array of events: %v", ErrBadEvent, err)
	}
	if len(raw) > max {
		return nil, 0, fmt.Errorf("%w: %d events in one request, the limit is %d", ErrBadEvent, len(raw), max)
	}
	events = make([]Event, 0, len(raw))
	for _, r := range raw {
		var e Event
		if json.Unmarshal(r, &e) != nil || e.Validate() != nil {
			dropped++
			continue
		}
		events = append(events, e)
	}
	return events, dropped, nil
}
