// Package bench is Capstan's fleet load generator: a crowd of simulated
// devices that check an edge for updates, download what they are offered
// (one patch, or the files their installed release lacks), verify every byte
// against the signed manifest and report events, while the generator records
// latency in HDR histograms.
//
// Two schedules are offered. Open loop (Config.Rate > 0) starts device
// sessions at a fixed arrival rate whatever the server does, and measures
// each session from its intended start time, so a stalled server shows up as
// latency instead of as a quietly lower request rate (no coordinated
// omission). Closed loop (Config.Concurrency) keeps a fixed number of
// sessions in flight and measures throughput.
//
// Simulated devices live in memory only: a device is an id, an edge order and
// the release it runs; releases (their manifests and file sets) are shared
// read-only between devices. Patch application is skipped; patch and blob
// bytes are still downloaded and hash-checked.
//
// SlowLink (the slow-link scenario) is the other instrument: instead of a
// fleet it times single updates through a simulated mobile link (a
// netsim.Proxy with a token bucket per direction, 1.6 Mbit/s down and
// 150 ms round trip by default), by the reference device and by a Capgo
// plugin in manifest mode, side by side (docs/decisions/051).
//
// A Bench is used once: New, then Run. Run is safe to cancel through its
// context. Nothing in the package keeps global state, so several benches may
// run in one process.
package bench
