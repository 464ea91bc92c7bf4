"use strict";
// Small DOM helpers. Everything the API returns is put on the page as
// text (never as HTML), so a release name or key name cannot inject code;
// the page's Content-Security-Policy forbids inline script besides.
/** h builds an element: h("button", {type: "button", onclick: f}, "Pause"). */
function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
}
const SVGNS = "http://www.w3.org/2000/svg";
/** s builds an SVG element. */
function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
}
function setAttrs(el, attrs) {
    if (!attrs)
        return;
    for (const name of Object.keys(attrs)) {
        const v = attrs[name];
        if (v === null || v === undefined || v === false)
            continue;
        if (typeof v === "function") {
            el.addEventListener(name.replace(/^on/, ""), v);
        }
        else if (v === true) {
            el.setAttribute(name, "");
        }
        else {
            el.setAttribute(name, String(v));
        }
    }
}
function append(el, children) {
    for (const c of children) {
        if (Array.isArray(c)) {
            append(el, c);
        }
        else if (c !== null && c !== undefined && c !== false) {
            el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
        }
    }
}
/** replace swaps the children of el for new ones. */
function replace(el, ...children) {
    el.replaceChildren();
    append(el, children);
}
function byId(id) {
    const el = document.getElementById(id);
    if (!el)
        throw new Error("console: missing element #" + id);
    return el;
}
// The origin's API as the console uses it. The key lives in
// sessionStorage: it stays with this tab (and its reloads) and is gone
// when the tab closes. It is sent as the same Authorization header the
// CLI sends, so the server applies the key's role and app scope.
/** ApiError is a refusal or failure, in words a person can act on. */
class ApiError extends Error {
    constructor(status, message) {
        super(message);
        this.status = status;
    }
}
const KEY_STORAGE = "capstan.console.key";
class Api {
    constructor() {
        this.key = sessionStorage.getItem(KEY_STORAGE);
    }
    setKey(k) {
        this.key = k;
        if (k)
            sessionStorage.setItem(KEY_STORAGE, k);
        else
            sessionStorage.removeItem(KEY_STORAGE);
    }
    async call(method, path, body) {
        const headers = {};
        if (this.key)
            headers["Authorization"] = "Bearer " + this.key;
        if (body !== undefined)
            headers["Content-Type"] = "application/json";
        let resp;
        try {
            resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
        }
        catch (e) {
            throw new ApiError(0, "The origin did not answer (" + String(e) + "). Is it running?");
        }
        const text = await resp.text();
        let data = null;
        try {
            data = text ? JSON.parse(text) : null;
        }
        catch {
            data = null;
        }
        if (!resp.ok) {
            const msg = data && typeof data === "object" && "error" in data ? String(data.error) : text.trim() || resp.statusText;
            throw new ApiError(resp.status, explain(resp.status) + msg);
        }
        return data;
    }
    get(path) {
        return this.call("GET", path);
    }
}
/** explain prefixes an API error with what the status means for the operator. */
function explain(status) {
    switch (status) {
        case 401:
            return "The origin does not accept this key: ";
        case 403:
            return "This key is not allowed to do that: ";
        case 404:
            return "Not found: ";
        case 409:
            return "Conflict: ";
        case 400:
            return "The origin refused the request: ";
        default:
            return status >= 500 ? "The origin failed (HTTP " + status + "): " : "HTTP " + status + ": ";
    }
}
const enc = encodeURIComponent;
// Numbers and times as people read them.
function fmtBytes(n) {
    if (!isFinite(n) || n <= 0)
        return n === 0 ? "0\u00a0B" : "—";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
        n /= 1000;
        i++;
    }
    // A no-break space keeps a number and its unit on one line.
    return (i === 0 || n >= 100 ? Math.round(n).toString() : n.toFixed(1)) + "\u00a0" + units[i];
}
function fmtPct(f, digits = 1) {
    if (!isFinite(f))
        return "—";
    const p = f * 100;
    return (Number.isInteger(p) ? p.toString() : p.toFixed(digits)) + "\u00a0%";
}
function fmtBPS(bps) {
    return fmtPct(bps / 10000, 2);
}
function fmtCount(n) {
    return Math.round(n).toLocaleString("en-US");
}
function fmtTime(iso) {
    if (!iso)
        return "—";
    const d = new Date(iso);
    if (isNaN(d.getTime()) || d.getUTCFullYear() < 2000)
        return "—";
    return d.toLocaleString("en-GB", { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}
function fmtAgo(iso, now = Date.now()) {
    if (!iso)
        return "never";
    const t = new Date(iso).getTime();
    if (isNaN(t) || t <= 0)
        return "never";
    const s = Math.max(0, Math.round((now - t) / 1000));
    if (s < 60)
        return s + " s ago";
    if (s < 3600)
        return Math.round(s / 60) + " min ago";
    if (s < 86400)
        return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
}
function versionName(r) {
    if (!r || !r.version || /^0+$/.test(r.id || ""))
        return "builtin";
    return r.version;
}
/** cmpVersion orders semver strings, "builtin" first. */
function cmpVersion(a, b) {
    if (a === b)
        return 0;
    if (a === "builtin")
        return -1;
    if (b === "builtin")
        return 1;
    const pa = a.split(/[.+-]/), pb = b.split(/[.+-]/);
    for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
        const x = pa[i] ?? "", y = pb[i] ?? "";
        const nx = Number(x), ny = Number(y);
        if (x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny)) {
            if (nx !== ny)
                return nx - ny;
        }
        else if (x !== y) {
            return x < y ? -1 : 1;
        }
    }
    return 0;
}
// Hand-drawn SVG charts: no library, no canvas, so they scale with zoom,
// print, and carry a text summary for screen readers.
const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7480", "#6e7781"];
const W = 640, H = 220, PL = 56, PR = 12, PT = 12, PB = 26;
/** niceMax rounds a maximum up to 1, 2 or 5 times a power of ten. */
function niceMax(v) {
    if (v <= 0)
        return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10])
        if (m * p >= v)
            return m * p;
    return 10 * p;
}
function timeLabel(ms, span) {
    const d = new Date(ms);
    if (span > 2 * 86400e3)
        return d.toLocaleDateString("en-GB", { day: "numeric", month: "short" });
    return d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
}
/** chart draws a line or stacked-area chart with a legend; the figure's
 * data-latest attribute holds the latest value of each series (tests and
 * screen readers read it; people read the legend). */
function chart(o) {
    const fig = h("figure", { class: "chart" });
    const n = o.times.length;
    const series = o.series.map((sr, i) => ({ ...sr, color: sr.color || PALETTE[i % PALETTE.length] }));
    const latest = series.map((sr) => {
        for (let i = sr.values.length - 1; i >= 0; i--)
            if (sr.values[i] !== null)
                return sr.values[i];
        return null;
    });
    const summary = series.map((sr, i) => sr.name + ": " + (latest[i] === null ? "no data" : o.format(latest[i]))).join("; ");
    fig.setAttribute("data-latest", series.map((sr, i) => sr.name + "=" + (latest[i] ?? "")).join(";"));
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": o.label + ". " + (n < 1 || !series.length ? o.empty : "Latest: " + summary) });
    fig.appendChild(svg);
    if (n < 1 || !series.length) {
        svg.appendChild(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, o.empty));
        fig.appendChild(h("figcaption", null, h("span", { class: "muted" }, o.empty)));
        return fig;
    }
    // Stack or not: tops[i][k] is the top of series i at point k.
    const tops = [];
    let maxV = o.threshold ? o.threshold.value : 0;
    for (let k = 0; k < n; k++) {
        let acc = 0;
        series.forEach((sr, i) => {
            tops[i] = tops[i] || [];
            const v = sr.values[k];
            if (o.stacked) {
                acc += v ?? 0;
                tops[i][k] = acc;
            }
            else {
                tops[i][k] = v;
            }
            maxV = Math.max(maxV, (o.stacked ? acc : v) ?? 0);
        });
    }
    const yMax = o.yMax ?? niceMax(maxV * 1.05);
    const t0 = o.times[0], t1 = o.times[n - 1], span = Math.max(1, t1 - t0);
    const x = (k) => PL + (n === 1 ? (W - PL - PR) / 2 : ((o.times[k] - t0) / span) * (W - PL - PR));
    const y = (v) => PT + (1 - Math.min(v, yMax) / yMax) * (H - PT - PB);
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
        const pts = [];
        for (let k = 0; k < n; k++) {
            const v = tops[i][k];
            if (v !== null && v !== undefined)
                pts.push(x(k).toFixed(1) + "," + y(v).toFixed(1));
        }
        if (!pts.length)
            return;
        if (o.stacked) {
            const base = [];
            for (let k = n - 1; k >= 0; k--)
                base.push(x(k).toFixed(1) + "," + y(i === 0 ? 0 : (tops[i - 1][k] ?? 0)).toFixed(1));
            svg.appendChild(s("polygon", { points: pts.concat(base).join(" "), fill: sr.color, "fill-opacity": 0.35, stroke: "none" }));
        }
        if (o.stacked && n === 1) {
            // One interval: a stacked bar reads better than dots.
            const top = tops[i][0] ?? 0, bottom = i === 0 ? 0 : (tops[i - 1][0] ?? 0);
            if (top > bottom)
                svg.appendChild(s("rect", { x: x(0) - 24, width: 48, y: y(top), height: Math.max(0, y(bottom) - y(top)), fill: sr.color, "fill-opacity": 0.8 }));
            return;
        }
        if (pts.length === 1) {
            const [px, py] = pts[0].split(",");
            svg.appendChild(s("circle", { cx: px, cy: py, r: 3.5, fill: sr.color }));
        }
        else {
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
        legend.appendChild(h("li", null, sw, sr.name + ": ", h("strong", null, latest[i] === null ? "—" : o.format(latest[i]))));
    });
    if (o.threshold)
        legend.appendChild(h("li", null, h("span", { class: "swatch dashed threshold-swatch", "aria-hidden": "true" }), o.threshold.label));
    fig.appendChild(h("figcaption", null, legend));
    return fig;
}
// The operator console: sign in with an API key, then apps → channels →
// releases, charts of a rollout, the fleet, and API keys. Everything it
// shows or does is one call to the origin's API with the operator's key.
const POLL_MS = 5000;
const st = {
    me: null,
    apps: [],
    app: "",
    channel: "",
    view: "releases",
    range: "3h",
    timer: 0,
    loading: false,
    again: false,
    updated: 0,
};
const api = new Api();
function canWrite(app) {
    const me = st.me;
    if (!me)
        return false;
    if (me.role === "admin")
        return true;
    return me.role === "publisher" && (!me.apps || me.apps.length === 0 || me.apps.includes(app));
}
function isAdmin() {
    return st.me?.role === "admin";
}
// ---- errors, in words -------------------------------------------------
const errors = new Map();
function setError(where, e) {
    if (e === null)
        errors.delete(where);
    else
        errors.set(where, where + ": " + (e instanceof Error ? e.message : String(e)));
    const box = byId("errors");
    replace(box, errors.size ? h("ul", null, [...errors.values()].map((m) => h("li", null, m))) : null);
    box.hidden = errors.size === 0;
}
// ---- sign in ----------------------------------------------------------
async function signIn(key) {
    const msg = byId("signin-error");
    msg.textContent = "";
    api.setKey(key.trim());
    try {
        st.me = await api.get("/v1/whoami");
    }
    catch (e) {
        api.setKey(null);
        st.me = null;
        msg.textContent = e instanceof Error ? e.message : String(e);
        byId("key").focus();
        return;
    }
    byId("signin").hidden = true;
    byId("main").hidden = false;
    byId("who").textContent = "Key " + st.me.id + (st.me.name ? " (" + st.me.name + ")" : "") + " · " + st.me.role + (st.me.apps && st.me.apps.length ? " of " + st.me.apps.join(", ") : "");
    byId("nav-keys").hidden = !isAdmin();
    show(st.view);
}
function signOut() {
    api.setKey(null);
    st.me = null;
    window.clearTimeout(st.timer);
    errors.clear();
    setError("", null);
    // Nothing the last key could see stays on the page.
    for (const id of ["view-releases", "view-fleet", "view-keys", "confirm", "who", "updated"])
        replace(byId(id));
    replace(byId("view-releases"), h("p", { class: "loading" }, "Loading…"));
    st.app = "";
    st.channel = "";
    st.view = "releases";
    byId("main").hidden = true;
    byId("signin").hidden = false;
    byId("key").value = "";
    byId("key").focus();
}
async function loadApps() {
    try {
        const r = await api.get("/v1/apps");
        st.apps = r.apps;
        setError("Apps", null);
    }
    catch (e) {
        setError("Apps", e);
    }
    const sel = byId("app-select");
    if (!st.apps.some((a) => a.id === st.app))
        st.app = st.apps.length ? st.apps[0].id : "";
    const ids = st.apps.map((a) => a.id).join("\n");
    if (sel.dataset.ids === ids && sel.value === st.app)
        return; // unchanged: leave the control alone
    sel.dataset.ids = ids;
    replace(sel, st.apps.length ? st.apps.map((a) => h("option", { value: a.id, selected: a.id === st.app }, a.id)) : h("option", { value: "" }, "no apps yet"));
    sel.disabled = st.apps.length === 0;
}
// ---- views and polling --------------------------------------------------
function show(v) {
    st.view = v;
    for (const name of ["releases", "fleet", "keys"]) {
        byId("view-" + name).hidden = name !== v;
        byId("nav-" + name).setAttribute("aria-current", name === v ? "page" : "false");
    }
    byId("app-picker").hidden = v !== "releases";
    void refresh();
}
async function refresh() {
    window.clearTimeout(st.timer);
    if (!st.me)
        return;
    if (st.loading) {
        // A poll is in flight: run again when it ends, so an action's result
        // shows at once rather than at the next poll.
        st.again = true;
        return;
    }
    st.loading = true;
    try {
        if (st.view === "releases")
            await renderReleases();
        else if (st.view === "fleet")
            await renderFleet();
        else
            await renderKeys();
        st.updated = Date.now();
    }
    finally {
        st.loading = false;
    }
    byId("updated").textContent = "Updated " + new Date(st.updated).toLocaleTimeString("en-GB");
    if (st.again) {
        st.again = false;
        return refresh();
    }
    // Live while a rollout runs: poll while the tab is visible and no
    // dialog is open (a dialog's text must not change under the reader).
    if (st.view !== "keys")
        st.timer = window.setTimeout(poll, POLL_MS);
}
function poll() {
    const dlg = byId("confirm");
    if (document.hidden || dlg.open) {
        st.timer = window.setTimeout(poll, POLL_MS);
        return;
    }
    void refresh();
}
/** rerender replaces a region but keeps keyboard focus on the control
 * with the same data-key, so polling never steals a user's place. */
function rerender(root, ...children) {
    const active = document.activeElement;
    const key = active && root.contains(active) ? active.getAttribute("data-key") : null;
    replace(root, ...children);
    if (key) {
        const again = root.querySelector(`[data-key="${CSS.escape(key)}"]`);
        again?.focus();
    }
}
async function settle(where, p) {
    try {
        const v = await p;
        setError(where, null);
        return v;
    }
    catch (e) {
        if (e instanceof ApiError && e.status === 401 && st.me) {
            // The key was revoked or expired while the page was open: back to
            // the sign-in form, with the origin's reason.
            signOut();
            byId("signin-error").textContent = e.message;
            return null;
        }
        setError(where, e);
        return null;
    }
}
async function renderReleases() {
    const root = byId("view-releases");
    // Apps appear with their first upload: follow them while polling.
    await loadApps();
    if (!st.app) {
        rerender(root, h("p", { class: "empty-state" }, "No apps yet. Upload a release with ", h("code", null, "capstan upload --app ID --version 1.0.0 --channel production www.zip"), " and it appears here."));
        return;
    }
    const app = enc(st.app);
    const [channels, details, stats, releases] = await Promise.all([
        settle("Channels", api.get(`/v1/apps/${app}/channels`)),
        settle("Channels", api.get(`/v1/apps/${app}/channel-details`)),
        settle("Stats", api.get(`/v1/apps/${app}/stats`)),
        settle("Releases", api.get(`/v1/apps/${app}/release-details`)),
    ]);
    const fallback = new Map();
    for (const x of details?.channels ?? [])
        if (x.fallback)
            fallback.set(x.channel, x.fallback);
    const d = { channels: channels?.channels ?? [], fallback, stats, releases: releases?.releases ?? [], timeline: null };
    d.channels.sort((a, b) => Number(!!b.default) - Number(!!a.default) || a.channel.localeCompare(b.channel));
    if (!d.channels.some((c) => c.channel === st.channel))
        st.channel = d.channels.length ? d.channels[0].channel : "";
    if (st.channel)
        d.timeline = await settle("Charts", api.get(`/v1/apps/${app}/channels/${enc(st.channel)}/timeline?range=${st.range}`));
    rerender(root, channelsSection(d), chartsSection(d), releasesSection(d));
}
function statsFor(d, ch) {
    return d.stats?.channels.find((c) => c.channel === ch);
}
function channelStatus(c, cs) {
    const cur = cs?.releases.find((r) => r.release === c.release.id);
    if (c.paused && cur?.auto_paused) {
        const a = cur.auto_paused;
        return {
            word: "Auto-paused",
            cls: "bad",
            why: `${fmtCount(a.failed_devices)} of ${fmtCount(a.devices)} devices (${fmtPct(a.failure_rate)}) reported a failure or a revert of ${versionName(c.release)}, over the ${fmtPct(a.threshold)} threshold, at ${fmtTime(a.at)}.`,
        };
    }
    if (c.paused)
        return { word: "Paused", cls: "warn", why: "An operator paused this rollout: no new device is offered " + versionName(c.release) + "." };
    if (c.rollback)
        return { word: "Rolled back", cls: "warn", why: "This record moves devices back to " + versionName(c.release) + "." };
    if (c.rollout_bps < 10000)
        return { word: "Rolling out", cls: "info", why: fmtBPS(c.rollout_bps) + " of devices are offered " + versionName(c.release) + "." };
    return { word: "Complete", cls: "ok", why: "Every device is offered " + versionName(c.release) + "." };
}
/** othersGet says what devices outside the rollout get: the record's
 * Stable, or, once a change narrows or pauses the rollout, the release the
 * channel served to everyone before (the server adds it, decision 102). */
function othersGet(c, fallback) {
    const r = c.stable ?? fallback;
    return r && versionName(r) !== "builtin" ? "are offered " + versionName(r) : "keep what they run";
}
function channelsSection(d) {
    const sec = h("section", { "aria-labelledby": "channels-h" }, h("h2", { id: "channels-h" }, "Channels of ", st.app));
    if (!d.channels.length) {
        sec.appendChild(h("p", { class: "empty-state" }, "No channel yet: upload with --channel, or run capstan channel set."));
        return sec;
    }
    const grid = h("div", { class: "cards" });
    for (const c of d.channels) {
        const cs = statsFor(d, c.channel);
        const status = channelStatus(c, cs);
        const cur = cs?.releases.find((r) => r.release === c.release.id);
        const key = "ch-" + c.channel;
        const card = h("article", { class: "card" + (c.channel === st.channel ? " selected" : ""), "data-channel": c.channel, "aria-labelledby": key + "-h" }, h("header", null, h("h3", { id: key + "-h" }, c.channel), c.default ? h("span", { class: "badge" }, "default") : null, h("span", { class: "status " + status.cls, "data-status": status.word }, status.word)), h("dl", null, h("dt", null, "Serving"), h("dd", { class: "serving" }, versionName(c.release)), h("dt", null, "Rollout"), h("dd", { class: "rollout" }, fmtBPS(c.rollout_bps)), h("dt", null, "Other devices"), h("dd", null, c.rollout_bps >= 10000 && !c.paused ? "—" : othersGet(c)), h("dt", null, "Devices reporting"), h("dd", null, cur ? fmtCount(cur.devices) : "0"), h("dt", null, "Failure rate"), h("dd", null, cur ? fmtPct(cur.failure_rate) + " (" + fmtCount(cur.failed_devices) + " devices)" : "—"), h("dt", null, "Record"), h("dd", null, "seq " + c.seq + ", signed " + fmtAgo(c.issued))), h("p", { class: "why" }, status.why), h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", "data-key": key + "-charts", "aria-pressed": c.channel === st.channel ? "true" : "false", onclick: () => { st.channel = c.channel; void refresh(); } }, "Charts"), canWrite(st.app) ? channelActions(c, d, key) : null));
        grid.appendChild(card);
    }
    sec.appendChild(grid);
    return sec;
}
function channelActions(c, d, key) {
    const out = [];
    const v = versionName(c.release);
    const builtin = v === "builtin";
    const path = `/v1/apps/${enc(st.app)}/channels/${enc(c.channel)}`;
    const fb = d.fallback.get(c.channel);
    if (!builtin) {
        out.push(h("button", { type: "button", "data-key": key + "-rollout", "data-action": "rollout", onclick: (ev) => rolloutDialog(c, fb, ev) }, "Change rollout…"));
        if (c.paused) {
            out.push(h("button", { type: "button", "data-key": key + "-resume", "data-action": "resume", onclick: (ev) => confirmAction(ev, "Resume " + c.channel, [`${v} is offered again to ${fmtBPS(c.rollout_bps)} of devices on ${c.channel} (the same devices as before the pause).`], "Resume", () => api.call("PUT", path, { paused: false })) }, "Resume"));
        }
        else {
            out.push(h("button", { type: "button", "data-key": key + "-pause", "data-action": "pause", onclick: (ev) => confirmAction(ev, "Pause " + c.channel, [`No new device on ${c.channel} will be offered ${v}. Devices that already run it keep it; the others ${othersGet(c, fb)}.`], "Pause", () => api.call("PUT", path, { paused: true })) }, "Pause"));
        }
        if (c.rollout_bps < 10000 || c.paused) {
            out.push(h("button", { type: "button", "data-key": key + "-finish", "data-action": "finish", onclick: (ev) => confirmAction(ev, "Finish the rollout of " + v, [`Every device on ${c.channel} will be offered ${v} (rollout 100\u00a0%${c.paused ? ", resumed" : ""}).` + (c.stable ? ` ${versionName(c.stable)} is no longer offered.` : "")], "Finish rollout", () => api.call("PUT", path, { rollout: 100, paused: false })) }, "Finish"));
        }
    }
    out.push(h("button", { type: "button", "data-key": key + "-rollback", "data-action": "rollback", onclick: (ev) => rollbackDialog(c, d, ev) }, "Roll back…"));
    const sources = d.channels.filter((o) => o.channel !== c.channel && versionName(o.release) !== "builtin");
    if (sources.length)
        out.push(h("button", { type: "button", "data-key": key + "-promote", "data-action": "promote", onclick: (ev) => promoteDialog(c, sources, fb, ev) }, "Promote into…"));
    return out;
}
// ---- confirmation dialogs ------------------------------------------------
let returnFocus = null;
/** openDialog shows the one modal dialog; confirm runs the action and
 * closes it on success, or shows the API's refusal in it. */
function openDialog(ev, title, body, confirmLabel, run, describe) {
    const dlg = byId("confirm");
    returnFocus = ev.currentTarget;
    const what = h("p", { id: "confirm-what", class: "what" });
    const err = h("p", { class: "error", role: "alert" });
    const ok = h("button", { type: "submit", class: "danger", "data-action": "confirm" }, confirmLabel);
    const update = () => { if (describe)
        what.textContent = describe(); };
    const form = h("form", { method: "dialog", "aria-describedby": "confirm-what" }, h("h2", { id: "confirm-title" }, title), ...body, what, err, h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", "data-action": "cancel", onclick: () => dlg.close() }, "Cancel"), ok));
    form.addEventListener("input", update);
    form.addEventListener("submit", async (e) => {
        e.preventDefault();
        ok.disabled = true;
        err.textContent = "";
        try {
            await run();
            dlg.close();
            await refresh();
        }
        catch (x) {
            err.textContent = x instanceof Error ? x.message : String(x);
        }
        finally {
            ok.disabled = false;
        }
    });
    replace(dlg, form);
    dlg.setAttribute("aria-labelledby", "confirm-title");
    update();
    dlg.showModal();
}
function confirmAction(ev, title, lines, label, run) {
    openDialog(ev, title, lines.map((l) => h("p", { class: "what" }, l)), label, run);
}
function field(label, input, hint) {
    return h("label", { class: "field" }, h("span", null, label), input, hint ? h("small", null, hint) : null);
}
function rolloutDialog(c, fallback, ev) {
    const v = versionName(c.release);
    const input = h("input", { type: "number", name: "rollout", min: 0, max: 100, step: "0.01", required: true, value: c.rollout_bps / 100, inputmode: "decimal" });
    const describe = () => {
        const p = Number(input.value);
        if (input.value === "" || isNaN(p) || p < 0 || p > 100)
            return "Give a percentage between 0 and 100.";
        let t = `${fmtPct(p / 100, 2)} of the devices on ${c.channel} (picked by a stable hash of their device id: the same devices at every edge, and raising the percentage only adds devices) will be offered ${v}.`;
        if (p < 100)
            t += ` The other ${fmtPct(1 - p / 100, 2)} ${othersGet(c, fallback)}.`;
        else if (c.stable)
            t += ` ${versionName(c.stable)} is no longer offered.`;
        if (p * 100 < c.rollout_bps)
            t += ` Devices that already installed ${v} keep it.`;
        if (c.paused)
            t += " The rollout stays paused until you resume it.";
        return t;
    };
    openDialog(ev, `Rollout of ${v} on ${c.channel}`, [field("Rollout (%)", input)], "Set rollout", () => api.call("PUT", `/v1/apps/${enc(st.app)}/channels/${enc(c.channel)}`, { rollout: Number(input.value) }), describe);
}
function rollbackDialog(c, d, ev) {
    const cur = versionName(c.release);
    const sel = h("select", { name: "to" }, h("option", { value: "" }, "the release served before" + (c.stable ? " (" + versionName(c.stable) + ")" : "")), d.releases.filter((r) => r.version !== cur).map((r) => h("option", { value: r.version }, r.version)), cur !== "builtin" ? h("option", { value: "builtin" }, "builtin (the bundle inside the app)") : null);
    const describe = () => {
        const to = sel.value === "" ? (c.stable ? versionName(c.stable) : "the release the channel served before " + cur) : sel.value === "builtin" ? "the bundle shipped inside the app (builtin)" : sel.value;
        return `Every device on ${c.channel} will be moved to ${to}, including devices that already installed ${cur}: the new record is marked as a rollback, which lets devices install an older version. Rollout becomes 100\u00a0%, not paused.`;
    };
    openDialog(ev, `Roll back ${c.channel}`, [field("Roll back to", sel)], "Roll back", () => api.call("POST", `/v1/apps/${enc(st.app)}/channels/${enc(c.channel)}/rollback`, sel.value ? { to: sel.value } : {}), describe);
}
function promoteDialog(c, sources, fallback, ev) {
    const sel = h("select", { name: "from" }, sources.map((o) => h("option", { value: o.channel }, `${o.channel} (serves ${versionName(o.release)})`)));
    const input = h("input", { type: "number", name: "rollout", min: 0, max: 100, step: "0.01", value: 100, required: true, inputmode: "decimal" });
    const describe = () => {
        const src = sources.find((o) => o.channel === sel.value);
        const p = Number(input.value);
        if (!src)
            return "";
        if (input.value === "" || isNaN(p) || p < 0 || p > 100)
            return "Give a percentage between 0 and 100.";
        const v = versionName(src.release);
        let t = `${c.channel} will serve ${v} (what ${src.channel} serves now) to ${fmtPct(p / 100, 2)} of its devices.`;
        if (p < 100) {
            const before = c.rollout_bps >= 10000 && !c.paused ? c.release : c.stable ?? fallback;
            const stable = before && versionName(before) !== "builtin" && versionName(before) !== v ? versionName(before) : "";
            t += stable ? ` The others are offered ${stable}.` : " The others keep what they run.";
        }
        return t;
    };
    openDialog(ev, `Promote into ${c.channel}`, [field("From channel", sel), field("Rollout (%)", input)], "Promote", () => api.call("POST", `/v1/apps/${enc(st.app)}/channels/${enc(c.channel)}/promote`, { from: sel.value, rollout: Number(input.value) }), describe);
}
// ---- charts ----------------------------------------------------------------
function chartsSection(d) {
    const sec = h("section", { "aria-labelledby": "charts-h", class: "charts" });
    const head = h("div", { class: "section-head" }, h("h2", { id: "charts-h" }, st.channel ? "Rollout of " + st.channel : "Rollout charts"), h("div", { class: "segmented", role: "group", "aria-label": "Time range" }, ["3h", "30d"].map((r) => h("button", { type: "button", class: "secondary", "data-key": "range-" + r, "aria-pressed": st.range === r ? "true" : "false", onclick: () => { st.range = r; void refresh(); } }, r === "3h" ? "3 hours" : "30 days"))));
    sec.appendChild(head);
    const t = d.timeline;
    const pts = t?.points ?? [];
    const times = pts.map((p) => new Date(p.start).getTime());
    const versions = new Set();
    for (const p of pts)
        for (const r of p.releases)
            versions.add(r.version || "?");
    const order = [...versions].sort(cmpVersion);
    const pick = (f) => order.map((v) => ({ name: v, values: pts.map((p) => { const r = p.releases.find((x) => (x.version || "?") === v); return r ? f(r) : null; }) }));
    const sample = t && t.sample_level > 0 ? ` Device counts are estimated from a 1-in-${Math.pow(2, t.sample_level)} sample of devices.` : "";
    const adoption = chart({
        label: "Devices on each release", times, stacked: true, format: fmtCount, empty: "No device has reported on this channel yet.",
        series: pick((r) => r.devices),
    });
    adoption.id = "chart-adoption";
    const rates = pick((r) => (r.failure_rate === undefined ? null : r.failure_rate)).filter((sr) => sr.values.some((v) => v !== null));
    const failure = chart({
        label: "Failure and revert rate of each release", times, format: (n) => fmtPct(n, 0), empty: "No release has reports yet.",
        series: rates, yMax: Math.max(0.05, ...(t ? [Math.min(1, niceMax(Math.max(t.auto_pause.failure_rate, ...rates.flatMap((sr) => sr.values.map((v) => v ?? 0))) * 1.2))] : [])),
        threshold: t && t.auto_pause.failure_rate > 0 ? { value: t.auto_pause.failure_rate, label: `auto-pause above ${fmtPct(t.auto_pause.failure_rate, 0)} (after ${t.auto_pause.min_devices} devices)` } : undefined,
    });
    failure.id = "chart-failures";
    let served = 0, full = 0;
    const cumServed = [], cumFull = [];
    for (const p of pts) {
        for (const r of p.releases) {
            served += r.bytes;
            full += r.full_bytes;
        }
        cumServed.push(served);
        cumFull.push(full);
    }
    const bytes = chart({
        label: "Bytes devices downloaded, against full bundles", times, format: fmtBytes, empty: "No download yet.",
        series: full > 0 ? [{ name: "downloaded (patches and full)", values: cumServed }, { name: "if every download were a full bundle", values: cumFull, dashed: true, color: "#6e7781" }] : [],
    });
    bytes.id = "chart-bytes";
    const saved = full > 0 ? h("p", { class: "saved" }, `Patches saved ${fmtPct(1 - served / full, 0)}: ${fmtBytes(served)} downloaded instead of ${fmtBytes(full)}.`) : null;
    sec.appendChild(h("div", { class: "chart-grid" }, h("div", null, h("h3", null, "Adoption: devices on each release"), adoption), h("div", null, h("h3", null, "Failure and revert rate"), failure), h("div", null, h("h3", null, "Bytes served"), bytes, saved)));
    sec.appendChild(h("p", { class: "muted" }, `One point per ${t && t.interval_seconds >= 3600 ? "hour" : "minute"}. A device counts once, under the release its latest check, install or confirm named. The failure rate is the share of devices that reported a failure or a revert, as auto-pause sees it.${sample}`));
    return sec;
}
// ---- release history --------------------------------------------------------
function releasesSection(d) {
    const serving = new Map();
    for (const c of d.channels) {
        const v = versionName(c.release);
        serving.set(v, [...(serving.get(v) ?? []), c.channel + (c.rollout_bps < 10000 ? " " + fmtBPS(c.rollout_bps) : "")]);
    }
    const rows = d.releases.map((r) => h("tr", { "data-version": r.version }, h("th", { scope: "row" }, r.version), h("td", null, (serving.get(r.version) ?? []).join(", ") || "—"), h("td", null, fmtTime(r.uploaded)), h("td", null, r.uploaded_by ? (r.uploaded_by_name ? r.uploaded_by_name + " (" + r.uploaded_by + ")" : r.uploaded_by) : "—"), h("td", null, r.signers.length ? "yes (" + r.signers.join(", ") + ")" : "no"), h("td", null, r.encrypted ? "yes" : "no"), h("td", { class: "num" }, fmtBytes(r.size), h("small", null, " " + r.files + " files")), h("td", { class: "num" }, r.full_bytes ? fmtBytes(r.full_bytes) : "—"), h("td", null, r.patches.length ? r.patches.map((p) => "from " + p.from + ": " + fmtBytes(p.bytes)).join("; ") : "—")));
    return h("section", { "aria-labelledby": "history-h" }, h("h2", { id: "history-h" }, "Release history"), h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-labelledby": "history-h" }, h("table", { id: "releases-table" }, h("thead", null, h("tr", null, ["Version", "Served on", "Uploaded", "By key", "Signed", "Encrypted", "Size", "Full download", "Patches"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: 9 }, "No release yet."))))));
}
// ---- fleet -------------------------------------------------------------------
async function renderFleet() {
    const root = byId("view-fleet");
    const f = await settle("Fleet", api.get("/v1/fleet"));
    if (!f)
        return;
    const edgeRows = f.edges.map((e) => h("tr", { "data-edge": e.name }, h("th", { scope: "row" }, e.url || e.name), h("td", null, e.region || "—"), h("td", null, h("span", { class: "status " + (e.health === "ok" ? "ok" : e.health === "behind" ? "warn" : "bad") }, e.health)), h("td", { class: "num" }, e.max_seq ? String(e.max_seq) + (e.health === "behind" ? " (lacks records signed " + fmtCount(Math.round((f.max_seq - e.max_seq) / 1000)) + " s later)" : "") : "—"), h("td", { class: "num" }, e.cache_hit_ratio < 0 ? "—" : fmtPct(e.cache_hit_ratio, 0)), h("td", { class: "num" }, e.rss_bytes ? fmtBytes(e.rss_bytes) : "—"), h("td", { class: "num" }, fmtBytes(e.bytes_served)), h("td", null, fmtAgo(e.last_report))));
    const originRows = f.origins.map((o) => h("tr", null, h("th", { scope: "row" }, o.url || o.name, o.self ? h("small", null, " (this one)") : null), h("td", null, o.region || "—"), h("td", { class: "num" }, o.rss_bytes ? fmtBytes(o.rss_bytes) : "—"), h("td", null, o.started ? fmtAgo(o.started).replace(" ago", "") : "—")));
    rerender(root, h("section", { "aria-labelledby": "edges-h" }, h("h2", { id: "edges-h" }, "Edges"), h("p", { class: "muted" }, `Newest channel record: seq ${f.max_seq}. Edges report every 10 s; one silent for ${f.silent_after_seconds} s is shown as silent.`), h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-labelledby": "edges-h" }, h("table", { id: "edges-table" }, h("thead", null, h("tr", null, ["Edge", "Region", "Health", "Last record seq", "Cache hits", "Memory (RSS)", "Bytes served", "Last report"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", null, edgeRows.length ? edgeRows : h("tr", null, h("td", { colspan: 8 }, "No edge has reported yet.")))))), h("section", { "aria-labelledby": "origins-h" }, h("h2", { id: "origins-h" }, "Origins"), h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-labelledby": "origins-h" }, h("table", null, h("thead", null, h("tr", null, ["Origin", "Region", "Memory (RSS)", "Up for"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", null, originRows)))));
}
// ---- API keys (admin) ---------------------------------------------------------
async function renderKeys() {
    const root = byId("view-keys");
    const r = await settle("API keys", api.get("/v1/keys"));
    const keys = r?.keys ?? [];
    const name = h("input", { type: "text", name: "name", maxlength: 128, autocomplete: "off" });
    const role = h("select", { name: "role" }, ["reader", "publisher", "admin"].map((x) => h("option", { value: x }, x)));
    const apps = h("input", { type: "text", name: "apps", autocomplete: "off", placeholder: "com.example.app, …" });
    const days = h("input", { type: "number", name: "days", min: 0, step: 1, value: 0, inputmode: "numeric" });
    const out = h("div", { id: "new-key", "aria-live": "polite" });
    const form = h("form", { class: "key-form", "aria-labelledby": "newkey-h" }, h("h2", { id: "newkey-h" }, "Create a key"), h("div", { class: "fields" }, field("Name", name, "who or what uses it, e.g. ci-github"), field("Role", role, "reader: look; publisher: upload and move channels of its apps; admin: everything"), field("Apps", apps, "comma-separated; required for a publisher, empty for an admin"), field("Expires after (days)", days, "0: never")), h("div", { class: "actions" }, h("button", { type: "submit", "data-action": "create-key" }, "Create key")), out);
    form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const body = { role: role.value };
        if (name.value.trim())
            body.name = name.value.trim();
        const list = apps.value.split(",").map((x) => x.trim()).filter(Boolean);
        if (list.length)
            body.apps = list;
        const n = Number(days.value);
        if (n > 0)
            body.expires = new Date(Date.now() + n * 86400e3).toISOString();
        try {
            const k = await api.call("POST", "/v1/keys", body);
            setError("Create key", null);
            await renderKeys();
            replace(byId("new-key"), h("div", { class: "secret" }, h("p", null, `Key ${k.id} (${k.role}) created. Copy it now: it is shown only this once.`), h("code", { id: "secret-value", tabindex: 0 }, k.key)));
            byId("secret-value").focus();
        }
        catch (x) {
            setError("Create key", x);
        }
    });
    const rows = keys.map((k) => h("tr", { "data-key-id": k.id }, h("th", { scope: "row" }, k.id), h("td", null, k.name || "—"), h("td", null, k.role), h("td", null, k.apps && k.apps.length ? k.apps.join(", ") : "all"), h("td", null, fmtTime(k.created)), h("td", null, k.expires ? fmtTime(k.expires) : "never"), h("td", null, k.id === st.me?.id ? h("small", null, "this key") : h("button", { type: "button", class: "danger", "data-key": "revoke-" + k.id, "data-action": "revoke", onclick: (ev) => confirmAction(ev, "Revoke key " + k.id, [`Key ${k.id}${k.name ? " (" + k.name + ")" : ""}, role ${k.role}, stops working at once: every CI job or person using it is refused from the next request. This cannot be undone.`], "Revoke key", () => api.call("DELETE", "/v1/keys/" + enc(k.id))) }, "Revoke"))));
    rerender(root, form, h("section", { "aria-labelledby": "keys-h" }, h("h2", { id: "keys-h" }, "API keys"), h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-labelledby": "keys-h" }, h("table", { id: "keys-table" }, h("thead", null, h("tr", null, ["ID", "Name", "Role", "Apps", "Created", "Expires", ""].map((t) => h("th", { scope: "col" }, t)))), h("tbody", null, rows)))));
}
// ---- start -----------------------------------------------------------------------
function start() {
    byId("signin-form").addEventListener("submit", (e) => {
        e.preventDefault();
        void signIn(byId("key").value);
    });
    byId("signout").addEventListener("click", signOut);
    for (const v of ["releases", "fleet", "keys"])
        byId("nav-" + v).addEventListener("click", () => show(v));
    byId("app-select").addEventListener("change", (e) => {
        st.app = e.target.value;
        st.channel = "";
        void refresh();
    });
    byId("confirm").addEventListener("close", () => {
        returnFocus?.focus();
        returnFocus = null;
    });
    document.addEventListener("visibilitychange", () => {
        if (!document.hidden && st.me && Date.now() - st.updated > POLL_MS)
            void refresh();
    });
    if (api.key)
        void signIn(api.key);
    else
        byId("key").focus();
}
start();
