package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// WriteHTML writes a self-contained HTML report: the summary table,
// latency histograms per operation, latency and throughput over time and,
// for a storm, the share of devices on the new release. Charts are inline
// SVG; the page loads nothing.
func (r *Result) WriteHTML(w io.Writer) error {
	var sb strings.Builder
	sb.WriteString(`<!doctype html><html><head><meta charset="utf-8"><title>capstan bench</title><style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f5f5f5}
.grid{display:flex;flex-wrap:wrap;gap:12px}.note{color:#666}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
svg text{font:11px system-ui,sans-serif;fill:#333}
</style></head><body>`)
	fmt.Fprintf(&sb, "<h1>capstan bench — %s scenario</h1>\n", html.EscapeString(r.Scenario))
	var text strings.Builder
	_ = r.WriteText(&text)
	fmt.Fprintf(&sb, "<p class=note>%s</p>\n", html.EscapeString(strings.SplitN(text.String(), "\n", 2)[0]))

	sb.WriteString("<h2>Latency by operation (ms)</h2><table><tr><th>op</th><th>count</th><th>errors</th><th>per s</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n")
	for _, op := range orderedOps(r.Ops) {
		s := r.Ops[op]
		fmt.Fprintf(&sb, "<tr><td>%s</td><td>%d</td><td>%d</td><td>%.1f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td></tr>\n",
			op, s.Count, s.Errors, s.PerSec, s.P50, s.P90, s.P95, s.P99, s.P999, s.Max)
	}
	sb.WriteString("</table><p class=note>check and update are measured from each session's intended start")
	if r.Mode == "open" {
		sb.WriteString(" (open loop: time spent waiting behind a slow server counts)")
	}
	sb.WriteString("; download from its own start; start_lag is how late sessions started against the schedule. Errors count failed attempts, including those a device recovered from on another edge.</p>\n")

	sb.WriteString("<h2>Latency histograms</h2><div class=grid>\n")
	for _, op := range []string{"check", "update", "download"} {
		if s, ok := r.Ops[op]; ok && len(s.Histogram) > 0 {
			sb.WriteString(histogramSVG(op, s))
		}
	}
	sb.WriteString("</div>\n")

	var markers []marker
	if r.Storm != nil && r.Storm.Error == "" {
		markers = append(markers, marker{r.Storm.At, "release " + r.Storm.Version})
	}
	if r.Kill != nil && r.Kill.At > 0 {
		markers = append(markers, marker{r.Kill.At, "edge killed"})
	}
	sb.WriteString("<h2>Latency over time</h2><div class=grid>\n")
	for _, op := range []string{"check", "update"} {
		if _, ok := r.Ops[op]; !ok {
			continue
		}
		var p50, p99, mx []xy
		for _, p := range r.Timeline {
			if s, ok := p.Ops[op]; ok && s.Count > 0 {
				p50 = append(p50, xy{p.T, s.P50})
				p99 = append(p99, xy{p.T, s.P99})
				mx = append(mx, xy{p.T, s.Max})
			}
		}
		sb.WriteString(lineSVG(op+" latency per second (ms, log scale)", []series{
			{"max", "#d62728", mx}, {"p99", "#ff7f0e", p99}, {"p50", "#1f77b4", p50},
		}, true, r.Elapsed, markers))
	}
	sb.WriteString("</div>\n<h2>Throughput over time</h2><div class=grid>\n")
	var checks, updates, errs, throttled, mbps []xy
	for _, p := range r.Timeline {
		checks = append(checks, xy{p.T, float64(p.Ops["check"].Count)})
		updates = append(updates, xy{p.T, float64(p.Ops["update"].Count)})
		errs = append(errs, xy{p.T, float64(p.Errors)})
		throttled = append(throttled, xy{p.T, float64(p.Throttled)})
		mbps = append(mbps, xy{p.T, float64(p.Bytes) / 1e6})
	}
	ops := []series{{"checks", "#1f77b4", checks}, {"updates", "#2ca02c", updates}, {"errors", "#d62728", errs}}
	if len(r.Throttled) > 0 {
		// Apart from errors, in grey: the edge limiting one address.
		ops = append(ops, series{"throttled (429, not errors)", "#7f7f7f", throttled})
	}
	sb.WriteString(lineSVG("operations per second", ops, false, r.Elapsed, markers))
	sb.WriteString(lineSVG("MB downloaded per second", []series{{"MB/s", "#9467bd", mbps}}, false, r.Elapsed, markers))
	if r.Storm != nil && r.Storm.Error == "" {
		var upd []xy
		for _, p := range r.Timeline {
			if p.Updated >= 0 {
				upd = append(upd, xy{p.T, 100 * p.Updated})
			}
		}
		sb.WriteString(lineSVG(fmt.Sprintf("devices on %s (%%): 99%% after %s", r.Storm.Version, secs(r.Storm.T99)),
			[]series{{"% updated", "#2ca02c", upd}}, false, r.Elapsed, markers))
	}
	sb.WriteString("</div>\n")
	fmt.Fprintf(&sb, "<h2>Summary</h2><pre>%s</pre>\n</body></html>\n", html.EscapeString(text.String()))
	_, err := io.WriteString(w, sb.String())
	if err != nil {
		return fmt.Errorf("bench: write report: %w", err)
	}
	return nil
}

type xy struct{ x, y float64 }

type series struct {
	name, color string
	pts         []xy
}

type marker struct {
	x     float64
	label string
}

const (
	chartW, chartH = 560, 260
	padL, padR     = 56, 12
	padT, padB     = 44, 36
)

// histogramSVG draws an operation's log-bucketed latency histogram.
func histogramSVG(op string, s OpSummary) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH)
	fmt.Fprintf(&sb, `<text x="%d" y="16" style="font-weight:600">%s latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms (n=%d)</text>`, padL, op, s.P50, s.P99, s.Max, s.Count)
	var maxC int64
	for _, b := range s.Histogram {
		maxC = max(maxC, b.Count)
	}
	n := len(s.Histogram)
	pw, ph := float64(chartW-padL-padR), float64(chartH-padT-padB)
	bw := pw / float64(n)
	for i, b := range s.Histogram {
		h := ph * float64(b.Count) / float64(max(maxC, 1))
		x := float64(padL) + float64(i)*bw
		fmt.Fprintf(&sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4e79a7"><title>≤ %s ms: %d</title></rect>`,
			x+1, float64(padT)+ph-h, math.Max(bw-2, 1), h, fmtMS(b.UpToMS), b.Count)
		if n <= 12 || i%int(math.Ceil(float64(n)/12)) == 0 {
			fmt.Fprintf(&sb, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x+bw/2, chartH-padB+14, fmtMS(b.UpToMS))
		}
	}
	fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="middle">latency ≤ (ms)</text>`, padL+int(pw/2), chartH-6)
	fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="end">%d</text><text x="%d" y="%d" text-anchor="end">0</text>`, padL-4, padT+4, maxC, padL-4, padT+int(ph))
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, padL, padT+int(ph), chartW-padR, padT+int(ph))
	sb.WriteString("</svg>\n")
	return sb.String()
}

func fmtMS(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.3g", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

// lineSVG draws series over time (seconds) with optional log y axis and
// vertical markers.
func lineSVG(title string, ss []series, logY bool, xmax float64, markers []marker) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH)
	fmt.Fprintf(&sb, `<text x="%d" y="16" style="font-weight:600">%s</text>`, padL, html.EscapeString(title))
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, p := range s.pts {
			xmax = math.Max(xmax, p.x)
			ymin, ymax = math.Min(ymin, p.y), math.Max(ymax, p.y)
		}
	}
	if math.IsInf(ymax, -1) {
		ymin, ymax = 0, 1
	}
	if xmax <= 0 {
		xmax = 1
	}
	pw, ph := float64(chartW-padL-padR), float64(chartH-padT-padB)
	var ty func(float64) float64
	var ticks []float64
	if logY {
		lo := math.Floor(math.Log10(math.Max(ymin, 0.001)))
		hi := math.Ceil(math.Log10(math.Max(ymax, 0.001)))
		if hi <= lo {
			hi = lo + 1
		}
		ty = func(v float64) float64 {
			return float64(padT) + ph - ph*(math.Log10(math.Max(v, 0.001))-lo)/(hi-lo)
		}
		for e := lo; e <= hi; e++ {
			ticks = append(ticks, math.Pow(10, e))
		}
	} else {
		ymin = 0
		if ymax <= 0 {
			ymax = 1
		}
		step := niceStep(ymax / 4)
		ymax = math.Ceil(ymax/step) * step
		ty = func(v float64) float64 { return float64(padT) + ph - ph*v/ymax }
		for v := 0.0; v <= ymax+step/2; v += step {
			ticks = append(ticks, v)
		}
	}
	tx := func(v float64) float64 { return float64(padL) + pw*v/xmax }
	for _, t := range ticks {
		y := ty(t)
		fmt.Fprintf(&sb, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`,
			padL, y, chartW-padR, y, padL-4, y+4, fmtMS(t))
	}
	xstep := niceStep(xmax / 8)
	for v := 0.0; v <= xmax+1e-9; v += xstep {
		fmt.Fprintf(&sb, `<text x="%.1f" y="%d" text-anchor="middle">%g</text>`, tx(v), chartH-padB+14, math.Round(v*100)/100)
	}
	fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="middle">seconds into the run</text>`, padL+int(pw/2), chartH-6)
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, padL, padT+int(ph), chartW-padR, padT+int(ph))
	for _, m := range markers {
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#555" stroke-dasharray="4 3"/><text x="%.1f" y="%d">%s</text>`,
			tx(m.x), padT, tx(m.x), padT+int(ph), tx(m.x)+3, padT+10, html.EscapeString(m.label))
	}
	for i, s := range ss {
		if len(s.pts) == 0 {
			continue
		}
		var pts []string
		for _, p := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", tx(p.x), ty(p.y)))
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`, s.color, strings.Join(pts, " "))
		if len(s.pts) <= 120 {
			// Dots too, so that a series with one point (an op seen in a
			// single second) still shows.
			for _, p := range s.pts {
				fmt.Fprintf(&sb, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`, tx(p.x), ty(p.y), s.color)
			}
		}
		lx := chartW - padR - 80*(len(ss)-i)
		fmt.Fprintf(&sb, `<rect x="%d" y="22" width="10" height="10" fill="%s"/><text x="%d" y="31">%s</text>`, lx, s.color, lx+14, html.EscapeString(s.name))
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
