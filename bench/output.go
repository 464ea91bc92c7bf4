package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
)

// opOrder is the order operations are printed in.
func opOrder() []string {
	return []string{"check", "update", "download", "update_patch", "update_files", "event", "start_lag"}
}

// orderedOps returns the ops of m in print order, unknown ones last.
func orderedOps[V any](m map[string]V) []string {
	var out []string
	order := opOrder()
	for _, op := range order {
		if _, ok := m[op]; ok {
			out = append(out, op)
		}
	}
	for _, op := range sortedKeys(m) {
		if !contains(order, op) {
			out = append(out, op)
		}
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// WriteJSON writes r as one indented JSON object.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("bench: write JSON: %w", err)
	}
	return nil
}

// WriteText writes the human summary: the run, a latency table per
// operation and per edge, throughput, bytes and errors.
func (r *Result) WriteText(w io.Writer) error {
	var sb strings.Builder
	mode := fmt.Sprintf("closed loop, %d sessions in flight", r.Concurrency)
	if r.Mode == "open" {
		mode = fmt.Sprintf("open loop, %.0f sessions/s (latency from intended start)", r.Rate)
	}
	fmt.Fprintf(&sb, "capstan bench: %s scenario, %d devices, %s, %.1fs, %s/%s on %s\n", r.Scenario, r.Devices, mode, r.Elapsed, r.App, r.Channel, r.Release)
	var fl []string
	for _, c := range r.Fleet {
		fl = append(fl, fmt.Sprintf("%s %d (%s)", c.Class, c.Devices, strings.Join(c.Versions, ", ")))
	}
	fmt.Fprintf(&sb, "fleet: %s\n", strings.Join(fl, "; "))
	fmt.Fprintf(&sb, "edges: %s\n\n", strings.Join(r.Edges, ", "))

	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tcount\terrors\tper s\tp50 ms\tp90 ms\tp95 ms\tp99 ms\tp99.9 ms\tmax ms\t")
	for _, op := range orderedOps(r.Ops) {
		s := r.Ops[op]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n", op, s.Count, s.Errors, s.PerSec, s.P50, s.P90, s.P95, s.P99, s.P999, s.Max)
	}
	tw.Flush()
	sb.WriteString("(errors count failed attempts, including those a device recovered from on another edge)\n")
	if len(r.PerEdge) > 1 {
		sb.WriteString("\nper edge:\n")
		tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "edge\top\tcount\terrors\tp50 ms\tp99 ms\tmax ms\t")
		for _, e := range sortedKeys(r.PerEdge) {
			for _, op := range orderedOps(r.PerEdge[e]) {
				s := r.PerEdge[e][op]
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.3f\t%.3f\t%.3f\t\n", e, op, s.Count, s.Errors, s.P50, s.P99, s.Max)
			}
		}
		tw.Flush()
	}
	fmt.Fprintf(&sb, "\nsessions %d (%.1f/s): %d updated (%.1f/s), %d up to date, %d blocked, %d failed checks, %d failed updates, %d failovers",
		r.Sessions, r.SessionsPerSec, r.Updates, r.UpdatesPerSec, r.UpToDate, r.Blocked, r.FailedChecks, r.FailedUpdates, r.Failovers)
	if r.PatchFallbacks > 0 {
		fmt.Fprintf(&sb, ", %d updates fell back to files after a failed patch", r.PatchFallbacks)
	}
	if r.Unstarted > 0 {
		fmt.Fprintf(&sb, ", %d due but never started (the generator fell behind)", r.Unstarted)
	}
	fmt.Fprintf(&sb, "\nbytes %s (%s/s): patches %s, blobs %s\n", humanize.IBytes(uint64(r.Bytes)), humanize.IBytes(uint64(r.BytesPerSec)), humanize.IBytes(uint64(r.PatchBytes)), humanize.IBytes(uint64(r.BlobBytes)))
	if len(r.Errors) > 0 {
		var es []string
		for _, k := range sortedKeys(r.Errors) {
			es = append(es, fmt.Sprintf("%s %d", k, r.Errors[k]))
		}
		fmt.Fprintf(&sb, "errors: %s\n", strings.Join(es, ", "))
	}
	if len(r.Throttled) > 0 {
		var ts []string
		for _, k := range sortedKeys(r.Throttled) {
			ts = append(ts, fmt.Sprintf("%s %d", k, r.Throttled[k]))
		}
		fmt.Fprintf(&sb, "throttled, not errors (429 from the edge's per-address limit; every simulated device shares this machine's address): %s\n", strings.Join(ts, ", "))
	}
	fmt.Fprintf(&sb, "origin fetches by the edges during the run: %.0f\n", r.OriginFetchesDelta)
	if s := r.Storm; s != nil {
		if s.Error != "" {
			fmt.Fprintf(&sb, "storm: %s\n", s.Error)
		} else {
			fmt.Fprintf(&sb, "storm: %s released at %.2fs; every edge answered it after %s; 50%% of devices on it after %s, 99%% after %s; %.1f%% at the end; %.0f origin fetches since\n",
				s.Version, s.At, secs(s.PropagationMax), secs(s.T50), secs(s.T99), 100*s.Updated, s.OriginFetches)
		}
	}
	if k := r.Kill; k != nil {
		fmt.Fprintf(&sb, "edge kill at %.2fs", k.At)
		if k.Error != "" {
			fmt.Fprintf(&sb, " (kill command: %s)", k.Error)
		}
		fmt.Fprintf(&sb, ": %d failed checks or updates after it (goal 0), %d failovers\n", k.FailedAfter, r.Failovers)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

func secs(s float64) string {
	if s < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2fs", s)
}
