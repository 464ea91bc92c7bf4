package device

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/stats"
)

// maxOutbox bounds the events a device keeps while no edge takes them
// (Capgo's plugin keeps 200 too); the oldest go first.
const maxOutbox = 200

func outboxPath(dir string) string { return filepath.Join(stateDir(dir), "events.json") }

// loadOutbox reads the events a previous run could not deliver.
func loadOutbox(dir string) []stats.Event {
	b, err := os.ReadFile(outboxPath(dir))
	if err != nil {
		return nil
	}
	var evs []stats.Event
	if json.Unmarshal(b, &evs) != nil {
		return nil
	}
	return evs
}

// saveOutbox keeps undelivered events for the next run. Statistics are
// not worth an fsync on the update path: a crash may lose them.
func (d *Device) saveOutbox() {
	if len(d.outbox) == 0 {
		os.Remove(outboxPath(d.cfg.Dir))
		return
	}
	if b, err := json.Marshal(d.outbox); err == nil {
		os.WriteFile(outboxPath(d.cfg.Dir), b, 0o644)
	}
}

// record queues an event about rel for the next flush.
func (d *Device) record(action string, rel release.Ref, bytes int64, errText string) {
	d.recordCause(action, rel, bytes, errText, "")
}

func (d *Device) recordCause(action string, rel release.Ref, bytes int64, errText, cause string) {
	if d.cfg.NoEvents {
		return
	}
	ch := d.st.Channel
	if ch == "" {
		ch = d.cfg.Channel
	}
	if ch == "" {
		return
	}
	ev := stats.Event{
		Action: action, App: d.cfg.App, Channel: ch, Device: d.st.DeviceID,
		Release: rel.ID, Version: rel.Version, Bytes: bytes, Time: d.cfg.Now().UnixMilli(), Error: errText, Cause: cause,
	}
	if action == stats.ActionCheck {
		ev.Native = d.cfg.NativeVersion
	}
	if ev.Validate() != nil {
		return
	}
	d.outbox = append(d.outbox, ev)
	if len(d.outbox) > maxOutbox {
		d.outbox = d.outbox[len(d.outbox)-maxOutbox:]
	}
}

// recordInstall reports the outcome of an install attempt of p.
func (d *Device) recordInstall(p *plan, err error) {
	if err != nil {
		d.recordCause(stats.ActionFail, p.target, d.bytes.Load(), err.Error(), failCause(err))
		return
	}
	if p.doc != nil {
		d.record(stats.ActionDownload, p.target, d.bytes.Load(), "")
	}
	d.record(stats.ActionInstall, p.target, 0, "")
}

// flushEvents posts queued events to the edge that answered (p.edge), or
// to the configured edges in turn. Events stay queued on network errors,
// 408, 429 and 5xx, and are dropped on other refusals (as Capgo's plugin
// does), so a bad batch cannot block the queue for ever.
func (d *Device) flushEvents(ctx context.Context, p *plan) {
	if len(d.outbox) == 0 {
		return
	}
	sent := false
	defer func() {
		if sent {
			d.outbox = nil
		}
		d.saveOutbox()
	}()
	edges := d.order()
	if p != nil && p.edge != "" {
		edges = uniq(append([]string{p.edge}, edges...))
	}
	body, err := json.Marshal(d.outbox)
	if err != nil {
		return
	}
	for _, e := range edges {
		ctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(e, "/")+"/v1/events", bytes.NewReader(body))
		if err != nil {
			cancel()
			continue
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := d.cfg.HTTPClient.Do(req)
		if err != nil {
			cancel()
			continue
		}
		resp.Body.Close()
		cancel()
		switch c := resp.StatusCode; {
		case c >= 200 && c < 300, c >= 400 && c < 500 && c != http.StatusRequestTimeout && c != http.StatusTooManyRequests:
			sent = true
			return
		}
	}
}

// failCause classifies an install failure for the stats: bytes that do
// not match the signed manifest, the device's own install step, or (the
// rest) the download.
func failCause(err error) string {
	switch {
	case errors.Is(err, ErrVerify):
		return stats.CauseVerify
	case errors.As(err, new(installError)):
		return stats.CauseInstall
	}
	return stats.CauseDownload
}

// installError marks a failure of the device's own install step (the
// swap), as opposed to getting the bytes.
type installError struct{ err error }

func (e installError) Error() string { return e.err.Error() }
func (e installError) Unwrap() error { return e.err }
