// The operator console: sign in with an API key, then apps → channels →
// releases, charts of a rollout, the fleet, and API keys. Everything it
// shows or does is one call to the origin's API with the operator's key.

type View = "releases" | "fleet" | "keys";

const POLL_MS = 5000;

const st = {
  me: null as Whoami | null,
  apps: [] as AppInfo[],
  app: "",
  channel: "",
  view: "releases" as View,
  range: "3h" as "3h" | "30d",
  timer: 0,
  loading: false,
  again: false,
  updated: 0,
};

const api = new Api();

function canWrite(app: string): boolean {
  const me = st.me;
  if (!me) return false;
  if (me.role === "admin") return true;
  return me.role === "publisher" && (!me.apps || me.apps.length === 0 || me.apps.includes(app));
}

function isAdmin(): boolean {
  return st.me?.role === "admin";
}

// ---- errors, in words -------------------------------------------------

const errors = new Map<string, string>();

function setError(where: string, e: unknown | null): void {
  if (e === null) errors.delete(where);
  else errors.set(where, where + ": " + (e instanceof Error ? e.message : String(e)));
  const box = byId("errors");
  replace(box, errors.size ? h("ul", null, [...errors.values()].map((m) => h("li", null, m))) : null);
  box.hidden = errors.size === 0;
}

// ---- sign in ----------------------------------------------------------

async function signIn(key: string): Promise<void> {
  const msg = byId("signin-error");
  msg.textContent = "";
  api.setKey(key.trim());
  try {
    st.me = await api.get<Whoami>("/v1/whoami");
  } catch (e) {
    api.setKey(null);
    st.me = null;
    msg.textContent = e instanceof Error ? e.message : String(e);
    byId<HTMLInputElement>("key").focus();
    return;
  }
  byId("signin").hidden = true;
  byId("main").hidden = false;
  byId("who").textContent = "Key " + st.me.id + (st.me.name ? " (" + st.me.name + ")" : "") + " · " + st.me.role + (st.me.apps && st.me.apps.length ? " of " + st.me.apps.join(", ") : "");
  byId("nav-keys").hidden = !isAdmin();
  show(st.view);
}

function signOut(): void {
  api.setKey(null);
  st.me = null;
  window.clearTimeout(st.timer);
  errors.clear();
  setError("", null);
  // Nothing the last key could see stays on the page.
  for (const id of ["view-releases", "view-fleet", "view-keys", "confirm", "who", "updated"]) replace(byId(id));
  replace(byId("view-releases"), h("p", { class: "loading" }, "Loading…"));
  st.app = "";
  st.channel = "";
  st.view = "releases";
  byId("main").hidden = true;
  byId("signin").hidden = false;
  byId<HTMLInputElement>("key").value = "";
  byId<HTMLInputElement>("key").focus();
}

async function loadApps(): Promise<void> {
  try {
    const r = await api.get<{ apps: AppInfo[] }>("/v1/apps");
    st.apps = r.apps;
    setError("Apps", null);
  } catch (e) {
    setError("Apps", e);
  }
  const sel = byId<HTMLSelectElement>("app-select");
  if (!st.apps.some((a) => a.id === st.app)) st.app = st.apps.length ? st.apps[0].id : "";
  const ids = st.apps.map((a) => a.id).join("\n");
  if (sel.dataset.ids === ids && sel.value === st.app) return; // unchanged: leave the control alone
  sel.dataset.ids = ids;
  replace(sel, st.apps.length ? st.apps.map((a) => h("option", { value: a.id, selected: a.id === st.app }, a.id)) : h("option", { value: "" }, "no apps yet"));
  sel.disabled = st.apps.length === 0;
}

// ---- views and polling --------------------------------------------------

function show(v: View): void {
  st.view = v;
  for (const name of ["releases", "fleet", "keys"] as View[]) {
    byId("view-" + name).hidden = name !== v;
    byId("nav-" + name).setAttribute("aria-current", name === v ? "page" : "false");
  }
  byId("app-picker").hidden = v !== "releases";
  void refresh();
}

async function refresh(): Promise<void> {
  window.clearTimeout(st.timer);
  if (!st.me) return;
  if (st.loading) {
    // A poll is in flight: run again when it ends, so an action's result
    // shows at once rather than at the next poll.
    st.again = true;
    return;
  }
  st.loading = true;
  try {
    if (st.view === "releases") await renderReleases();
    else if (st.view === "fleet") await renderFleet();
    else await renderKeys();
    st.updated = Date.now();
  } finally {
    st.loading = false;
  }
  byId("updated").textContent = "Updated " + new Date(st.updated).toLocaleTimeString("en-GB");
  if (st.again) {
    st.again = false;
    return refresh();
  }
  // Live while a rollout runs: poll while the tab is visible and no
  // dialog is open (a dialog's text must not change under the reader).
  if (st.view !== "keys") st.timer = window.setTimeout(poll, POLL_MS);
}

function poll(): void {
  const dlg = byId<HTMLDialogElement>("confirm");
  if (document.hidden || dlg.open) {
    st.timer = window.setTimeout(poll, POLL_MS);
    return;
  }
  void refresh();
}

/** rerender replaces a region but keeps keyboard focus on the control
 * with the same data-key, so polling never steals a user's place. */
function rerender(root: HTMLElement, ...children: (Node | null)[]): void {
  const active = document.activeElement as HTMLElement | null;
  const key = active && root.contains(active) ? active.getAttribute("data-key") : null;
  replace(root, ...children);
  if (key) {
    const again = root.querySelector<HTMLElement>(`[data-key="${CSS.escape(key)}"]`);
    again?.focus();
  }
}

// ---- releases view -----------------------------------------------------

interface AppData {
  channels: ChannelRecord[];
  fallback: Map<string, Ref>;
  stats: StatsReport | null;
  releases: ReleaseDetail[];
  timeline: Timeline | null;
}

async function settle<T>(where: string, p: Promise<T>): Promise<T | null> {
  try {
    const v = await p;
    setError(where, null);
    return v;
  } catch (e) {
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

async function renderReleases(): Promise<void> {
  const root = byId("view-releases");
  // Apps appear with their first upload: follow them while polling.
  await loadApps();
  if (!st.app) {
    rerender(root, h("p", { class: "empty-state" }, "No apps yet. Upload a release with ", h("code", null, "capstan upload --app ID --version 1.0.0 --channel production www.zip"), " and it appears here."));
    return;
  }
  const app = enc(st.app);
  const [channels, details, stats, releases] = await Promise.all([
    settle("Channels", api.get<{ channels: ChannelRecord[] }>(`/v1/apps/${app}/channels`)),
    settle("Channels", api.get<{ channels: ChannelDetail[] }>(`/v1/apps/${app}/channel-details`)),
    settle("Stats", api.get<StatsReport>(`/v1/apps/${app}/stats`)),
    settle("Releases", api.get<{ releases: ReleaseDetail[] }>(`/v1/apps/${app}/release-details`)),
  ]);
  const fallback = new Map<string, Ref>();
  for (const x of details?.channels ?? []) if (x.fallback) fallback.set(x.channel, x.fallback);
  const d: AppData = { channels: channels?.channels ?? [], fallback, stats, releases: releases?.releases ?? [], timeline: null };
  d.channels.sort((a, b) => Number(!!b.default) - Number(!!a.default) || a.channel.localeCompare(b.channel));
  if (!d.channels.some((c) => c.channel === st.channel)) st.channel = d.channels.length ? d.channels[0].channel : "";
  if (st.channel) d.timeline = await settle("Charts", api.get<Timeline>(`/v1/apps/${app}/channels/${enc(st.channel)}/timeline?range=${st.range}`));
  rerender(root, channelsSection(d), chartsSection(d), releasesSection(d));
}

function statsFor(d: AppData, ch: string): ChannelStats | undefined {
  return d.stats?.channels.find((c) => c.channel === ch);
}

function channelStatus(c: ChannelRecord, cs: ChannelStats | undefined): { word: string; why: string; cls: string } {
  const cur = cs?.releases.find((r) => r.release === c.release.id);
  if (c.paused && cur?.auto_paused) {
    const a = cur.auto_paused;
    return {
      word: "Auto-paused",
      cls: "bad",
      why: `${fmtCount(a.failed_devices)} of ${fmtCount(a.devices)} devices (${fmtPct(a.failure_rate)}) reported a failure or a revert of ${versionName(c.release)}, over the ${fmtPct(a.threshold)} threshold, at ${fmtTime(a.at)}.`,
    };
  }
  if (c.paused) return { word: "Paused", cls: "warn", why: "An operator paused this rollout: no new device is offered " + versionName(c.release) + "." };
  if (c.rollback) return { word: "Rolled back", cls: "warn", why: "This record moves devices back to " + versionName(c.release) + "." };
  if (c.rollout_bps < 10000) return { word: "Rolling out", cls: "info", why: fmtBPS(c.rollout_bps) + " of devices are offered " + versionName(c.release) + "." };
  return { word: "Complete", cls: "ok", why: "Every device is offered " + versionName(c.release) + "." };
}

/** othersGet says what devices outside the rollout get: the record's
 * Stable, or, once a change narrows or pauses the rollout, the release the
 * channel served to everyone before (the server adds it, decision 102). */
function othersGet(c: ChannelRecord, fallback?: Ref): string {
  const r = c.stable ?? fallback;
  return r && versionName(r) !== "builtin" ? "are offered " + versionName(r) : "keep what they run";
}

function channelsSection(d: AppData): HTMLElement {
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
    const card = h("article", { class: "card" + (c.channel === st.channel ? " selected" : ""), "data-channel": c.channel, "aria-labelledby": key + "-h" },
      h("header", null,
        h("h3", { id: key + "-h" }, c.channel),
        c.default ? h("span", { class: "badge" }, "default") : null,
        h("span", { class: "status " + status.cls, "data-status": status.word }, status.word)),
      h("dl", null,
        h("dt", null, "Serving"), h("dd", { class: "serving" }, versionName(c.release)),
        h("dt", null, "Rollout"), h("dd", { class: "rollout" }, fmtBPS(c.rollout_bps)),
        h("dt", null, "Other devices"), h("dd", null, c.rollout_bps >= 10000 && !c.paused ? "—" : othersGet(c)),
        h("dt", null, "Devices reporting"), h("dd", null, cur ? fmtCount(cur.devices) : "0"),
        h("dt", null, "Failure rate"), h("dd", null, cur ? fmtPct(cur.failure_rate) + " (" + fmtCount(cur.failed_devices) + " devices)" : "—"),
        h("dt", null, "Record"), h("dd", null, "seq " + c.seq + ", signed " + fmtAgo(c.issued))),
      h("p", { class: "why" }, status.why),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", "data-key": key + "-charts", "aria-pressed": c.channel === st.channel ? "true" : "false", onclick: () => { st.channel = c.channel; void refresh(); } }, "Charts"),
        canWrite(st.app) ? channelActions(c, d, key) : null));
    grid.appendChild(card);
  }
  sec.appendChild(grid);
  return sec;
}

function channelActions(c: ChannelRecord, d: AppData, key: string): Node[] {
  const out: Node[] = [];
  const v = versionName(c.release);
  const builtin = v === "builtin";
  const path = `/v1/apps/${enc(st.app)}/channels/${enc(c.channel)}`;
  const fb = d.fallback.get(c.channel);
  if (!builtin) {
    out.push(h("button", { type: "button", "data-key": key + "-rollout", "data-action": "rollout", onclick: (ev: Event) => rolloutDialog(c, fb, ev) }, "Change rollout…"));
    if (c.paused) {
      out.push(h("button", { type: "button", "data-key": key + "-resume", "data-action": "resume", onclick: (ev: Event) =>
        confirmAction(ev, "Resume " + c.channel, [`${v} is offered again to ${fmtBPS(c.rollout_bps)} of devices on ${c.channel} (the same devices as before the pause).`], "Resume", () => api.call("PUT", path, { paused: false })) }, "Resume"));
    } else {
      out.push(h("button", { type: "button", "data-key": key + "-pause", "data-action": "pause", onclick: (ev: Event) =>
        confirmAction(ev, "Pause " + c.channel, [`No new device on ${c.channel} will be offered ${v}. Devices that already run it keep it; the others ${othersGet(c, fb)}.`], "Pause", () => api.call("PUT", path, { paused: true })) }, "Pause"));
    }
    if (c.rollout_bps < 10000 || c.paused) {
      out.push(h("button", { type: "button", "data-key": key + "-finish", "data-action": "finish", onclick: (ev: Event) =>
        confirmAction(ev, "Finish the rollout of " + v, [`Every device on ${c.channel} will be offered ${v} (rollout 100\u00a0%${c.paused ? ", resumed" : ""}).` + (c.stable ? ` ${versionName(c.stable)} is no longer offered.` : "")], "Finish rollout", () => api.call("PUT", path, { rollout: 100, paused: false })) }, "Finish"));
    }
  }
  out.push(h("button", { type: "button", "data-key": key + "-rollback", "data-action": "rollback", onclick: (ev: Event) => rollbackDialog(c, d, ev) }, "Roll back…"));
  const sources = d.channels.filter((o) => o.channel !== c.channel && versionName(o.release) !== "builtin");
  if (sources.length) out.push(h("button", { type: "button", "data-key": key + "-promote", "data-action": "promote", onclick: (ev: Event) => promoteDialog(c, sources, fb, ev) }, "Promote into…"));
  return out;
}

// ---- confirmation dialogs ------------------------------------------------

let returnFocus: HTMLElement | null = null;

/** openDialog shows the one modal dialog; confirm runs the action and
 * closes it on success, or shows the API's refusal in it. */
function openDialog(ev: Event, title: string, body: Node[], confirmLabel: string, run: () => Promise<unknown>, describe?: () => string): void {
  const dlg = byId<HTMLDialogElement>("confirm");
  returnFocus = ev.currentTarget as HTMLElement;
  const what = h("p", { id: "confirm-what", class: "what" });
  const err = h("p", { class: "error", role: "alert" });
  const ok = h("button", { type: "submit", class: "danger", "data-action": "confirm" }, confirmLabel);
  const update = () => { if (describe) what.textContent = describe(); };
  const form = h("form", { method: "dialog", "aria-describedby": "confirm-what" },
    h("h2", { id: "confirm-title" }, title),
    ...body,
    what,
    err,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", "data-action": "cancel", onclick: () => dlg.close() }, "Cancel"),
      ok));
  form.addEventListener("input", update);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    ok.disabled = true;
    err.textContent = "";
    try {
      await run();
      dlg.close();
      await refresh();
    } catch (x) {
      err.textContent = x instanceof Error ? x.message : String(x);
    } finally {
      ok.disabled = false;
    }
  });
  replace(dlg, form);
  dlg.setAttribute("aria-labelledby", "confirm-title");
  update();
  dlg.showModal();
}

function confirmAction(ev: Event, title: string, lines: string[], label: string, run: () => Promise<unknown>): void {
  openDialog(ev, title, lines.map((l) => h("p", { class: "what" }, l)), label, run);
}

function field(label: string, input: HTMLElement, hint?: string): HTMLElement {
  return h("label", { class: "field" }, h("span", null, label), input, hint ? h("small", null, hint) : null);
}

function rolloutDialog(c: ChannelRecord, fallback: Ref | undefined, ev: Event): void {
  const v = versionName(c.release);
  const input = h("input", { type: "number", name: "rollout", min: 0, max: 100, step: "0.01", required: true, value: c.rollout_bps / 100, inputmode: "decimal" });
  const describe = () => {
    const p = Number(input.value);
    if (input.value === "" || isNaN(p) || p < 0 || p > 100) return "Give a percentage between 0 and 100.";
    let t = `${fmtPct(p / 100, 2)} of the devices on ${c.channel} (picked by a stable hash of their device id: the same devices at every edge, and raising the percentage only adds devices) will be offered ${v}.`;
    if (p < 100) t += ` The other ${fmtPct(1 - p / 100, 2)} ${othersGet(c, fallback)}.`;
    else if (c.stable) t += ` ${versionName(c.stable)} is no longer offered.`;
    if (p * 100 < c.rollout_bps) t += ` Devices that already installed ${v} keep it.`;
    if (c.paused) t += " The rollout stays paused until you resume it.";
    return t;
  };
  openDialog(ev, `Rollout of ${v} on ${c.channel}`, [field("Rollout (%)", input)], "Set rollout",
    () => api.call("PUT", `/v1/apps/${enc(st.app)}/channels/${enc(c.channel)}`, { rollout: Number(input.value) }), describe);
}

function rollbackDialog(c: ChannelRecord, d: AppData, ev: Event): void {
  const cur = versionName(c.release);
  const sel = h("select", { name: "to" },
    h("option", { value: "" }, "the release served before" + (c.stable ? " (" + versionName(c.stable) + ")" : "")),
    d.releases.filter((r) => r.version !== cur).map((r) => h("option", { value: r.version }, r.version)),
    cur !== "builtin" ? h("option", { value: "builtin" }, "builtin (the bundle inside the app)") : null);
  const describe = () => {
    const to = sel.value === "" ? (c.stable ? versionName(c.stable) : "the release the channel served before " + cur) : sel.value === "builtin" ? "the bundle shipped inside the app (builtin)" : sel.value;
    return `Every device on ${c.channel} will be moved to ${to}, including devices that already installed ${cur}: the new record is marked as a rollback, which lets devices install an older version. Rollout becomes 100\u00a0%, not paused.`;
  };
  openDialog(ev, `Roll back ${c.channel}`, [field("Roll back to", sel)], "Roll back",
    () => api.call("POST", `/v1/apps/${enc(st.app)}/channels/${enc(c.channel)}/rollback`, sel.value ? { to: sel.value } : {}), describe);
}

function promoteDialog(c: ChannelRecord, sources: ChannelRecord[], fallback: Ref | undefined, ev: Event): void {
  const sel = h("select", { name: "from" }, sources.map((o) => h("option", { value: o.channel }, `${o.channel} (serves ${versionName(o.release)})`)));
  const input = h("input", { type: "number", name: "rollout", min: 0, max: 100, step: "0.01", value: 100, required: true, inputmode: "decimal" });
  const describe = () => {
    const src = sources.find((o) => o.channel === sel.value);
    const p = Number(input.value);
    if (!src) return "";
    if (input.value === "" || isNaN(p) || p < 0 || p > 100) return "Give a percentage between 0 and 100.";
    const v = versionName(src.release);
    let t = `${c.channel} will serve ${v} (what ${src.channel} serves now) to ${fmtPct(p / 100, 2)} of its devices.`;
    if (p < 100) {
      const before = c.rollout_bps >= 10000 && !c.paused ? c.release : c.stable ?? fallback;
      const stable = before && versionName(before) !== "builtin" && versionName(before) !== v ? versionName(before) : "";
      t += stable ? ` The others are offered ${stable}.` : " The others keep what they run.";
    }
    return t;
  };
  openDialog(ev, `Promote into ${c.channel}`, [field("From channel", sel), field("Rollout (%)", input)], "Promote",
    () => api.call("POST", `/v1/apps/${enc(st.app)}/channels/${enc(c.channel)}/promote`, { from: sel.value, rollout: Number(input.value) }), describe);
}

// ---- charts ----------------------------------------------------------------

function chartsSection(d: AppData): HTMLElement {
  const sec = h("section", { "aria-labelledby": "charts-h", class: "charts" });
  const head = h("div", { class: "section-head" },
    h("h2", { id: "charts-h" }, st.channel ? "Rollout of " + st.channel : "Rollout charts"),
    h("div", { class: "segmented", role: "group", "aria-label": "Time range" },
      (["3h", "30d"] as const).map((r) => h("button", { type: "button", class: "secondary", "data-key": "range-" + r, "aria-pressed": st.range === r ? "true" : "false", onclick: () => { st.range = r; void refresh(); } },
        r === "3h" ? "3 hours" : "30 days"))));
  sec.appendChild(head);
  const t = d.timeline;
  const pts = t?.points ?? [];
  const times = pts.map((p) => new Date(p.start).getTime());
  const versions = new Set<string>();
  for (const p of pts) for (const r of p.releases) versions.add(r.version || "?");
  const order = [...versions].sort(cmpVersion);
  const pick = (f: (r: TimelineRelease) => number | null) => order.map((v) => ({ name: v, values: pts.map((p) => { const r = p.releases.find((x) => (x.version || "?") === v); return r ? f(r) : null; }) }));
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
  const cumServed: number[] = [], cumFull: number[] = [];
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
  sec.appendChild(h("div", { class: "chart-grid" },
    h("div", null, h("h3", null, "Adoption: devices on each release"), adoption),
    h("div", null, h("h3", null, "Failure and revert rate"), failure),
    h("div", null, h("h3", null, "Bytes served"), bytes, saved)));
  sec.appendChild(h("p", { class: "muted" }, `One point per ${t && t.interval_seconds >= 3600 ? "hour" : "minute"}. A device counts once, under the release its latest check, install or confirm named. The failure rate is the share of devices that reported a failure or a revert, as auto-pause sees it.${sample}`));
  return sec;
}

// ---- release history --------------------------------------------------------

function releasesSection(d: AppData): HTMLElement {
  const serving = new Map<string, string[]>();
  for (const c of d.channels) {
    const v = versionName(c.release);
    serving.set(v, [...(serving.get(v) ?? []), c.channel + (c.rollout_bps < 10000 ? " " + fmtBPS(c.rollout_bps) : "")]);
  }
  const rows = d.releases.map((r) => h("tr", { "data-version": r.version },
    h("th", { scope: "row" }, r.version),
    h("td", null, (serving.get(r.version) ?? []).join(", ") || "—"),
    h("td", null, fmtTime(r.uploaded)),
    h("td", null, r.uploaded_by ? (r.uploaded_by_name ? r.uploaded_by_name + " (" + r.uploaded_by + ")" : r.uploaded_by) : "—"),
    h("td", null, r.signers.length ? "yes (" + r.signers.join(", ") + ")" : "no"),
    h("td", null, r.encrypted ? "yes" : "no"),
    h("td", { class: "num" }, fmtBytes(r.size), h("small", null, " " + r.files + " files")),
    h("td", { class: "num" }, r.full_bytes ? fmtBytes(r.full_bytes) : "—"),
    h("td", null, r.patches.length ? r.patches.map((p) => "from " + p.from + ": " + fmtBytes(p.bytes)).join("; ") : "—")));
  return h("section", { "aria-labelledby": "history-h" },
    h("h2", { id: "history-h" }, "Release history"),
    h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-labelledby": "history-h" },
      h("table", { id: "releases-table" },
        h("thead", null, h("tr", null, ["Version", "Served on", "Uploaded", "By key", "Signed", "Encrypted", "Size", "Full download", "Patches"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: 9 }, "No release yet."))))));
}

// ---- fleet -------------------------------------------------------------------

async function renderFleet(): Promise<void> {
  const root = byId("view-fleet");
  const f = await settle("Fleet", api.get<Fleet>("/v1/fleet"));
  if (!f) return;
  const edgeRows = f.edges.map((e) => h("tr", { "data-edge": e.name },
    h("th", { scope: "row" }, e.url || e.name),
    h("td", null, e.region || "—"),
    h("td", null, h("span", { class: "status " + (e.health === "ok" ? "ok" : e.health === "behind" ? "warn" : "bad") }, e.health)),
    h("td", { class: "num" }, e.max_seq ? String(e.max_seq) + (e.health === "behind" ? " (lacks records signed " + fmtCount(Math.round((f.max_seq - e.max_seq) / 1000)) + " s later)" : "") : "—"),
    h("td", { class: "num" }, e.cache_hit_ratio < 0 ? "—" : fmtPct(e.cache_hit_ratio, 0)),
    h("td", { class: "num" }, e.rss_bytes ? fmtBytes(e.rss_bytes) : "—"),
    h("td", { class: "num" }, fmtBytes(e.bytes_served)),
    h("td", null, fmtAgo(e.last_report))));
  const originRows = f.origins.map((o) => h("tr", null,
    h("th", { scope: "row" }, o.url || o.name, o.self ? h("small", null, " (this one)") : null),
    h("td", null, o.region || "—"),
    h("td", { class: "num" }, o.rss_bytes ? fmtBytes(o.rss_bytes) : "—"),
    h("td", null, o.started ? fmtAgo(o.started).replace(" ago", "") : "—")));
  rerender(root,
    h("section", { "aria-labelledby": "edges-h" },
      h("h2", { id: "edges-h" }, "Edges"),
      h("p", { class: "muted" }, `Newest channel record: seq ${f.max_seq}. Edges report every 10 s; one silent for ${f.silent_after_seconds} s is shown as silent.`),
      h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-labelledby": "edges-h" },
        h("table", { id: "edges-table" },
          h("thead", null, h("tr", null, ["Edge", "Region", "Health", "Last record seq", "Cache hits", "Memory (RSS)", "Bytes served", "Last report"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", null, edgeRows.length ? edgeRows : h("tr", null, h("td", { colspan: 8 }, "No edge has reported yet.")))))),
    h("section", { "aria-labelledby": "origins-h" },
      h("h2", { id: "origins-h" }, "Origins"),
      h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-labelledby": "origins-h" },
        h("table", null,
          h("thead", null, h("tr", null, ["Origin", "Region", "Memory (RSS)", "Up for"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", null, originRows)))));
}

// ---- API keys (admin) ---------------------------------------------------------

async function renderKeys(): Promise<void> {
  const root = byId("view-keys");
  const r = await settle("API keys", api.get<{ keys: KeyInfo[] }>("/v1/keys"));
  const keys = r?.keys ?? [];
  const name = h("input", { type: "text", name: "name", maxlength: 128, autocomplete: "off" });
  const role = h("select", { name: "role" }, (["reader", "publisher", "admin"] as Role[]).map((x) => h("option", { value: x }, x)));
  const apps = h("input", { type: "text", name: "apps", autocomplete: "off", placeholder: "com.example.app, …" });
  const days = h("input", { type: "number", name: "days", min: 0, step: 1, value: 0, inputmode: "numeric" });
  const out = h("div", { id: "new-key", "aria-live": "polite" });
  const form = h("form", { class: "key-form", "aria-labelledby": "newkey-h" },
    h("h2", { id: "newkey-h" }, "Create a key"),
    h("div", { class: "fields" },
      field("Name", name, "who or what uses it, e.g. ci-github"),
      field("Role", role, "reader: look; publisher: upload and move channels of its apps; admin: everything"),
      field("Apps", apps, "comma-separated; required for a publisher, empty for an admin"),
      field("Expires after (days)", days, "0: never")),
    h("div", { class: "actions" }, h("button", { type: "submit", "data-action": "create-key" }, "Create key")),
    out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body: { name?: string; role: string; apps?: string[]; expires?: string } = { role: role.value };
    if (name.value.trim()) body.name = name.value.trim();
    const list = apps.value.split(",").map((x) => x.trim()).filter(Boolean);
    if (list.length) body.apps = list;
    const n = Number(days.value);
    if (n > 0) body.expires = new Date(Date.now() + n * 86400e3).toISOString();
    try {
      const k = await api.call<NewKey>("POST", "/v1/keys", body);
      setError("Create key", null);
      await renderKeys();
      replace(byId("new-key"), h("div", { class: "secret" },
        h("p", null, `Key ${k.id} (${k.role}) created. Copy it now: it is shown only this once.`),
        h("code", { id: "secret-value", tabindex: 0 }, k.key)));
      byId("secret-value").focus();
    } catch (x) {
      setError("Create key", x);
    }
  });
  const rows = keys.map((k) => h("tr", { "data-key-id": k.id },
    h("th", { scope: "row" }, k.id),
    h("td", null, k.name || "—"),
    h("td", null, k.role),
    h("td", null, k.apps && k.apps.length ? k.apps.join(", ") : "all"),
    h("td", null, fmtTime(k.created)),
    h("td", null, k.expires ? fmtTime(k.expires) : "never"),
    h("td", null, k.id === st.me?.id ? h("small", null, "this key") : h("button", { type: "button", class: "danger", "data-key": "revoke-" + k.id, "data-action": "revoke", onclick: (ev: Event) =>
      confirmAction(ev, "Revoke key " + k.id, [`Key ${k.id}${k.name ? " (" + k.name + ")" : ""}, role ${k.role}, stops working at once: every CI job or person using it is refused from the next request. This cannot be undone.`], "Revoke key",
        () => api.call("DELETE", "/v1/keys/" + enc(k.id))) }, "Revoke"))));
  rerender(root, form,
    h("section", { "aria-labelledby": "keys-h" },
      h("h2", { id: "keys-h" }, "API keys"),
      h("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-labelledby": "keys-h" },
        h("table", { id: "keys-table" },
          h("thead", null, h("tr", null, ["ID", "Name", "Role", "Apps", "Created", "Expires", ""].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", null, rows)))));
}

// ---- start -----------------------------------------------------------------------

function start(): void {
  byId("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    void signIn(byId<HTMLInputElement>("key").value);
  });
  byId("signout").addEventListener("click", signOut);
  for (const v of ["releases", "fleet", "keys"] as View[]) byId("nav-" + v).addEventListener("click", () => show(v));
  byId("app-select").addEventListener("change", (e) => {
    st.app = (e.target as HTMLSelectElement).value;
    st.channel = "";
    void refresh();
  });
  byId("confirm").addEventListener("close", () => {
    returnFocus?.focus();
    returnFocus = null;
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && st.me && Date.now() - st.updated > POLL_MS) void refresh();
  });
  if (api.key) void signIn(api.key);
  else byId<HTMLInputElement>("key").focus();
}

start();
