// The origin's API as the console uses it. The key lives in
// sessionStorage: it stays with this tab (and its reloads) and is gone
// when the tab closes. It is sent as the same Authorization header the
// CLI sends, so the server applies the key's role and app scope.

type Role = "admin" | "publisher" | "reader";

interface Whoami { id: string; name?: string; role: Role; apps?: string[]; created: string; expires?: string }
interface AppInfo { id: string; created: string; require_signing?: boolean; release_key_ids?: string[]; encrypted: boolean }
interface Ref { version: string; id: string }
interface ChannelRecord {
  app: string; channel: string; seq: number; release: Ref; rollout_bps: number; stable?: Ref;
  paused?: boolean; rollback?: boolean; default?: boolean; block_major?: boolean; device_select?: boolean;
  issued: string; expires: string;
}
interface AutoPause { at: string; seq: number; failure_rate: number; devices: number; failed_devices: number; threshold: number }
interface Counters {
  checks: number; downloads: number; installs: number; confirms: number; failures: number; reverts: number;
  bytes: number; devices: number; failed_devices: number; failure_rate: number;
}
interface ReleaseStats extends Counters { version: string; release: string; auto_paused?: AutoPause }
interface ChannelStats { channel: string; serving: string; rollout_bps: number; paused: boolean; totals: Counters; releases: ReleaseStats[] }
interface StatsReport { app: string; totals: Counters; channels: ChannelStats[] }
interface PatchSize { from: string; bytes: number }
interface ReleaseDetail {
  version: string; id: string; uploaded: string; uploaded_by?: string; uploaded_by_name?: string; size: number; files: number;
  min_native?: string; signers: string[]; encrypted: boolean; full_bytes: number; patches: PatchSize[];
}
interface ChannelDetail { channel: string; fallback?: Ref }
interface Policy { failure_rate: number; min_devices: number }
interface TimelineRelease {
  release: string; version: string; devices: number; checks: number; downloads: number; installs: number; confirms: number;
  failures: number; reverts: number; bytes: number; full_bytes: number; failure_rate?: number; reported_devices?: number; failed_devices?: number;
}
interface TimelinePoint { start: string; releases: TimelineRelease[] }
interface Timeline { app: string; channel: string; interval_seconds: number; sample_level: number; auto_pause: Policy; points: TimelinePoint[] }
interface EdgeView {
  name: string; url?: string; region?: string; status: string; channels: number; max_seq: number; state_age_seconds: number;
  cache_hits: number; cache_misses: number; cache_bytes: number; bytes_served: number; events_queued: number; rss_bytes: number;
  started: string; health: string; last_report?: string; cache_hit_ratio: number;
}
interface OriginView { name: string; url?: string; region?: string; self: boolean; rss_bytes?: number; started?: string }
interface Fleet { max_seq: number; edges: EdgeView[]; origins: OriginView[]; silent_after_seconds: number }
interface KeyInfo { id: string; name?: string; role: Role; apps?: string[]; created: string; expires?: string }
interface NewKey { key: string; id: string; role: Role; apps?: string[]; expires?: string }

/** ApiError is a refusal or failure, in words a person can act on. */
class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

const KEY_STORAGE = "capstan.console.key";

class Api {
  key: string | null = sessionStorage.getItem(KEY_STORAGE);

  setKey(k: string | null): void {
    this.key = k;
    if (k) sessionStorage.setItem(KEY_STORAGE, k);
    else sessionStorage.removeItem(KEY_STORAGE);
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.key) headers["Authorization"] = "Bearer " + this.key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp: Response;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "The origin did not answer (" + String(e) + "). Is it running?");
    }
    const text = await resp.text();
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) {
      const msg = data && typeof data === "object" && "error" in data ? String((data as { error: unknown }).error) : text.trim() || resp.statusText;
      throw new ApiError(resp.status, explain(resp.status) + msg);
    }
    return data as T;
  }

  get<T>(path: string): Promise<T> {
    return this.call<T>("GET", path);
  }
}

/** explain prefixes an API error with what the status means for the operator. */
function explain(status: number): string {
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
