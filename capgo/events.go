package capgo

import (
	"strings"

	"github.com/capstan-ota/capstan/release"
)

// Capstan device event actions a Capgo stat maps onto (the same names as
// Capstan's own device events).
const (
	EventCheck    = "check" // sent by the edge for every update check
	EventDownload = "download"
	EventInstall  = "install"
	EventFail     = "fail"
	EventRevert   = "revert"
)

// EventAction maps a plugin stat action onto a Capstan device event
// action, or "" for actions that only feed the per-action counters:
//
//   - set (a bundle was activated) → install;
//   - update_fail (notifyAppReady was not called in time and the plugin
//     rolled back) → revert;
//   - every other *_fail (download, checksum, decrypt, unzip, …) → fail;
//   - download_complete, download_zip_complete and
//     download_manifest_complete → download.
func EventAction(action string) string {
	switch {
	case action == "set":
		return EventInstall
	case action == "update_fail":
		return EventRevert
	case strings.HasSuffix(action, "_fail"), action == "insufficient_disk_space":
		return EventFail
	case action == "download_complete", action == "download_zip_complete", action == "download_manifest_complete":
		return EventDownload
	}
	return ""
}

// Causes of a failure, as Capstan's device events classify them: only a
// failure that may be the release's fault (verify, install) counts towards
// its failure rate; a download failure may be the network's.
const (
	CauseDownload = "download"
	CauseVerify   = "verify"
	CauseInstall  = "install"
)

// FailCause classifies a plugin failure action.
func FailCause(action string) string {
	switch action {
	case "download_fail", "finish_download_fail", "download_manifest_file_fail":
		return CauseDownload
	case "checksum_fail", "checksum_required", "decrypt_fail", "download_manifest_checksum_fail", "download_manifest_brotli_fail",
		"manifest_path_fail", "windows_path_fail", "canonical_path_fail":
		return CauseVerify
	}
	return CauseInstall
}

// Event is a Capgo stat mapped onto a Capstan device event.
type Event struct {
	Action  string
	App     string
	Channel string
	Device  string
	// Release is the release the event is about; zero for the bundle
	// inside the app or a version name the edge does not know.
	Release release.Hash
	Version string
	// Time is when it happened on the device, in Unix milliseconds (0 when
	// the plugin did not say).
	Time int64
	// Error is the plugin's action name for failures.
	Error string
	// Cause classifies a fail event (Cause…); empty for other actions.
	Cause string
	// Addr is the device's network address (stats.AddrOf), set by the
	// edge for fail and revert events.
	Addr string
}

// EventSink receives the events Capgo devices report. Implementations must
// be safe for concurrent use and must not block: the edge calls them on
// the request path. The slice is the callee's to keep.
type EventSink interface {
	DeviceEvents(evs []Event)
}

// EventSinkFunc adapts a function to EventSink.
type EventSinkFunc func(evs []Event)

// DeviceEvents calls f.
func (f EventSinkFunc) DeviceEvents(evs []Event) { f(evs) }

// NoEvents is an EventSink that drops everything.
type NoEvents struct{}

// DeviceEvents drops evs.
func (NoEvents) DeviceEvents([]Event) {}

// knownActions are the plugin actions counted under their own name in
// metrics; others are counted as "other", so a device cannot mint label
// values. It is read-only after package initialisation.
var knownActions = func() map[string]bool {
	m := map[string]bool{}
	for _, a := range strings.Fields(`set set_next set_fail reset delete app_moved_to_foreground app_moved_to_background
		app_launch_start app_launch_ready app_launch_timeout update_fail download_fail finish_download_fail checksum_fail
		checksum_required decrypt_fail unzip_fail windows_path_fail canonical_path_fail directory_path_fail manifest_path_fail
		low_mem_fail insufficient_disk_space blocked_by_server_url rate_limit_reached download_0 download_10 download_20
		download_30 download_40 download_50 download_60 download_70 download_80 download_90 download_complete
		download_zip_start download_zip_complete download_manifest_start download_manifest_complete
		download_manifest_file_fail download_manifest_checksum_fail download_manifest_brotli_fail app_crash
		app_crash_native app_anr app_killed_low_memory app_killed_excessive_resource_usage app_initialization_failure
		app_memory_warning webview_javascript_error webview_unhandled_rejection webview_resource_error
		webview_security_policy_violation webview_unclean_restart webview_render_process_gone
		webview_content_process_terminated webview_dom_content_loaded webview_page_loaded os_version_changed
		native_app_version_changed`) {
		m[a] = true
	}
	return m
}()

// MetricAction returns the label under which an action is counted: its
// own name for the plugin's known actions, "other" for the rest.
func MetricAction(action string) string {
	if knownActions[action] {
		return action
	}
	return "other"
}
