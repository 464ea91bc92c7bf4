// Numbers and times as people read them.

function fmtBytes(n: number): string {
  if (!isFinite(n) || n <= 0) return n === 0 ? "0\u00a0B" : "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  // A no-break space keeps a number and its unit on one line.
  return (i === 0 || n >= 100 ? Math.round(n).toString() : n.toFixed(1)) + "\u00a0" + units[i];
}

function fmtPct(f: number, digits = 1): string {
  if (!isFinite(f)) return "—";
  const p = f * 100;
  return (Number.isInteger(p) ? p.toString() : p.toFixed(digits)) + "\u00a0%";
}

function fmtBPS(bps: number): string {
  return fmtPct(bps / 10000, 2);
}

function fmtCount(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function fmtTime(iso: string | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d.getTime()) || d.getUTCFullYear() < 2000) return "—";
  return d.toLocaleString("en-GB", { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function fmtAgo(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "never";
  const t = new Date(iso).getTime();
  if (isNaN(t) || t <= 0) return "never";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function versionName(r: Ref | undefined): string {
  if (!r || !r.version || /^0+$/.test(r.id || "")) return "builtin";
  return r.version;
}

/** cmpVersion orders semver strings, "builtin" first. */
function cmpVersion(a: string, b: string): number {
  if (a === b) return 0;
  if (a === "builtin") return -1;
  if (b === "builtin") return 1;
  const pa = a.split(/[.+-]/), pb = b.split(/[.+-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? "", y = pb[i] ?? "";
    const nx = Number(x), ny = Number(y);
    if (x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny)) {
      if (nx !== ny) return nx - ny;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}
