// Hand-drawn SVG charts: no library, no canvas, so they scale with zoom,
// print, and carry a text summary for screen readers.

interface Series {
  name: string;
  values: (number | null)[];
  color?: string;
  dashed?: boolean;
}

interface ChartOptions {
  label: string;
  times: number[]; // ms since the epoch, one per value
  series: Series[];
  stacked?: boolean;
  format: (n: number) => string;
  yMax?: number;
  threshold?: { value: number; label: string };
  empty: string;
}

const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7480", "#6e7781"];

const W = 640, H = 220, PL = 56, PR = 12, PT = 12, PB = 26;

/** niceMax rounds a maximum up to 1, 2 or 5 times a power of ten. */
function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function timeLabel(ms: number, span: number): string {
  const d = new Date(ms);
  if (span > 2 * 86400e3) return d.toLocaleDateString("en-GB", { day: "numeric", month: "short" });
  return d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
}

/** chart draws a line or stacked-area chart with a legend; the figure's
 * data-latest attribute holds the latest value of each series (tests and
 * screen readers read it; people read the legend). */
function chart(o: ChartOptions): HTMLElement {
  const fig = h("figure", { class: "chart" });
  const n = o.times.length;
  const series = o.series.map((sr, i) => ({ ...sr, color: sr.color || PALETTE[i % PALETTE.length] }));
  const latest = series.map((sr) => {
    for (let i = sr.values.length - 1; i >= 0; i--) if (sr.values[i] !== null) return sr.values[i] as number;
    return null;
  });
  const summary = series.map((sr, i) => sr.name + ": " + (latest[i] === null ? "no data" : o.format(latest[i] as number))).join("; ");
  fig.setAttribute("data-latest", series.map((sr, i) => sr.name + "=" + (latest[i] ?? "")).join(";"));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": o.label + ". " + (n < 1 || !series.length ? o.empty : "Latest: " + summary) });
  fig.appendChild(svg);
  if (n < 1 || !series.length) {
    svg.appendChild(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, o.empty));
    fig.appendChild(h("figcaption", null, h("span", { class: "muted" }, o.empty)));
    return fig;
  }
  // Stack or not: tops[i][k] is the top of series i at point k.
  const tops: (number | null)[][] = [];
  let maxV = o.threshold ? o.threshold.value : 0;
  for (let k = 0; k < n; k++) {
    let acc = 0;
    series.forEach((sr, i) => {
      tops[i] = tops[i] || [];
      const v = sr.values[k];
      if (o.stacked) {
        acc += v ?? 0;
        tops[i][k] = acc;
      } else {
        tops[i][k] = v;
      }
      maxV = Math.max(maxV, (o.stacked ? acc : v) ?? 0);
    });
  }
  const yMax = o.yMax ?? niceMax(maxV * 1.05);
  const t0 = o.times[0], t1 = o.times[n - 1], span = Math.max(1, t1 - t0);
  const x = (k: number) => PL + (n === 1 ? (W - PL - PR) / 2 : ((o.times[k] - t0) / span) * (W - PL - PR));
  const y = (v: number) => PT + (1 - Math.min(v, yMax) / yMax) * (H - PT - PB);
  // Grid and axes.
  // Gridlines at round values: 5 steps for 5×10^k, 4 for 1 and 2×10^k.
  const lead = Math.round(yMax / Math.pow(10, Math.floor(Math.log10(yMax))));
  const steps = lead === 5 ? 5 : 4;
  for (let i = 0; i <= steps; i++) {
    const v = (yMax * i) / steps;
    svg.appendChild(s("line", { x1: PL, x2: W - PR, y1: y(v), y2: y(v), class: "grid" }));
    svg.appendChild(s("text", { x: PL - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, o.format(v)));
  }
  const ticks = n === 1 ? [0] : [0, Math.floor((n - 1) / 3), Math.floor((2 * (n - 1)) / 3), n - 1];
  for (const k of ticks) {
    svg.appendChild(s("text", { x: x(k), y: H - 8, "text-anchor": k === 0 ? "start" : k === n - 1 ? "end" : "middle", class: "tick" }, timeLabel(o.times[k], span)));
  }
  // Series, bottom first.
  series.forEach((sr, i) => {
    const pts: string[] = [];
    for (let k = 0; k < n; k++) {
      const v = tops[i][k];
      if (v !== null && v !== undefined) pts.push(x(k).toFixed(1) + "," + y(v).toFixed(1));
    }
    if (!pts.length) return;
    if (o.stacked) {
      const base: string[] = [];
      for (let k = n - 1; k >= 0; k--) base.push(x(k).toFixed(1) + "," + y(i === 0 ? 0 : (tops[i - 1][k] ?? 0)).toFixed(1));
      svg.appendChild(s("polygon", { points: pts.concat(base).join(" "), fill: sr.color, "fill-opacity": 0.35, stroke: "none" }));
    }
    if (o.stacked && n === 1) {
      // One interval: a stacked bar reads better than dots.
      const top = tops[i][0] ?? 0, bottom = i === 0 ? 0 : (tops[i - 1][0] ?? 0);
      if (top > bottom) svg.appendChild(s("rect", { x: x(0) - 24, width: 48, y: y(top), height: Math.max(0, y(bottom) - y(top)), fill: sr.color, "fill-opacity": 0.8 }));
      return;
    }
    if (pts.length === 1) {
      const [px, py] = pts[0].split(",");
      svg.appendChild(s("circle", { cx: px, cy: py, r: 3.5, fill: sr.color }));
    } else {
      svg.appendChild(s("polyline", { points: pts.join(" "), fill: "none", stroke: sr.color, "stroke-width": 2, "stroke-dasharray": sr.dashed ? "6 4" : null }));
    }
  });
  if (o.threshold) {
    const ty = y(o.threshold.value);
    svg.appendChild(s("line", { x1: PL, x2: W - PR, y1: ty, y2: ty, class: "threshold" }));
    svg.appendChild(s("text", { x: W - PR - 4, y: ty - 5, "text-anchor": "end", class: "threshold-label" }, o.threshold.label));
  }
  const legend = h("ul", { class: "legend" });
  series.forEach((sr, i) => {
    // CSSOM, not a style attribute: the CSP forbids inline styles.
    const sw = h("span", { class: "swatch" + (sr.dashed ? " dashed" : ""), "aria-hidden": "true" });
    sw.style.setProperty("--c", sr.color);
    legend.appendChild(h("li", null, sw, sr.name + ": ", h("strong", null, latest[i] === null ? "—" : o.format(latest[i] as number))));
  });
  if (o.threshold) legend.appendChild(h("li", null, h("span", { class: "swatch dashed threshold-swatch", "aria-hidden": "true" }), o.threshold.label));
  fig.appendChild(h("figcaption", null, legend));
  return fig;
}
