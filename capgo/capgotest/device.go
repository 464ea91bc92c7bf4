// Package capgotest is a fake @capgo/capacitor-updater device for tests:
// it sends the plugin's exact requests, checks every answer with the
// plugin's rules (the iOS decoder's strict types included), and installs
// updates with the plugin's algorithm: manifest downloads that reuse files
// the device already holds by hash, Brotli payloads, SHA-256 checks, and
// for encrypted bundles the RSA recovery of session key and checksum and
// the AES-CBC decryption of the zip.
package capgotest

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/andybalholm/brotli"
	"github.com/capstan-ota/capstan/capgo"
	"github.com/capstan-ota/capstan/capgo/capgokey"
	"golang.org/x/sync/errgroup"
)

// AppVersion mirrors the iOS plugin's AppVersionDec: every field has the
// one JSON type iOS accepts, so decoding an answer into it fails exactly
// when iOS would fail (unknown keys are ignored, as on iOS).
type AppVersion struct {
	Version    *string           `json:"version"`
	URL        *string           `json:"url"`
	Checksum   *string           `json:"checksum"`
	SessionKey *string           `json:"session_key"`
	Error      *string           `json:"error"`
	Message    *string           `json:"message"`
	Kind       *string           `json:"kind"`
	Major      *bool             `json:"major"`
	Breaking   *bool             `json:"breaking"`
	Link       *string           `json:"link"`
	Comment    *string           `json:"comment"`
	Data       map[string]string `json:"data"`
	Manifest   []ManifestEntry   `json:"manifest"`
}

// ManifestEntry mirrors the iOS manifest entry: strings only.
type ManifestEntry struct {
	FileName    *string `json:"file_name"`
	FileHash    *string `json:"file_hash"`
	DownloadURL *string `json:"download_url"`
}

// IsUpdate reports whether the answer is an update to download: no error
// or kind, and a version other than "builtin".
func (a *AppVersion) IsUpdate() bool {
	return a.Error == nil && a.Kind == nil && str(a.Version) != capgo.Builtin
}

// IsBuiltin reports whether the answer sends the device back to the bundle
// inside the app, as both plugins read it: no error or kind key (Android
// CapacitorUpdaterPlugin.java and iOS CapacitorUpdaterPlugin.swift return
// from the check on either, as a classified non-update) and version
// "builtin", which they test before they look at url.
func (a *AppVersion) IsBuiltin() bool {
	return a.Error == nil && a.Kind == nil && str(a.Version) == capgo.Builtin
}

// str returns *p or "".
func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// DecodeAnswer decodes an update-check answer as iOS does and checks it
// with the plugin's rules: a classified non-update has a string error and
// a kind of up_to_date, blocked or failed; an update has a version, an
// absolute http(s) url, a lowercase checksum (64 hex, or 512 hex when
// encrypted), and manifest entries with safe, unique paths and absolute
// URLs. It never accepts "{}".
func DecodeAnswer(raw []byte) (*AppVersion, error) {
	var a AppVersion
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("iOS decode_error: %w", err)
	}
	if a.Error != nil || a.Kind != nil {
		switch str(a.Kind) {
		case capgo.KindUpToDate, capgo.KindBlocked, capgo.KindFailed:
		default:
			return nil, fmt.Errorf("kind %q is not up_to_date, blocked or failed", str(a.Kind))
		}
		if str(a.Error) == "" || a.Message == nil {
			return nil, errors.New("a non-update answer needs error and message")
		}
		return &a, nil
	}
	if str(a.Version) == "" {
		return nil, errors.New("update answer without version (the plugin counts it as failed)")
	}
	if a.IsBuiltin() {
		return &a, nil // reset to builtin: url and checksum are not read
	}
	if err := absURL(str(a.URL)); err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	enc := str(a.SessionKey) != ""
	if a.Checksum == nil {
		return nil, errors.New("no checksum")
	}
	if enc {
		if b, err := hex.DecodeString(*a.Checksum); err != nil || len(b) != 256 || strings.ToLower(*a.Checksum) != *a.Checksum {
			return nil, fmt.Errorf("encrypted checksum %q is not 512 lowercase hex", *a.Checksum)
		}
	} else if !capgo.IsHexSHA256(*a.Checksum) {
		return nil, fmt.Errorf("checksum %q is not 64 lowercase hex", *a.Checksum)
	}
	seen := map[string]bool{}
	for i, e := range a.Manifest {
		name, hash := str(e.FileName), str(e.FileHash)
		if name == "" || hash == "" {
			return nil, fmt.Errorf("manifest[%d]: empty file_name or file_hash", i)
		}
		if err := safePath(name); err != nil {
			return nil, fmt.Errorf("manifest[%d]: manifest_path_fail: %w", i, err)
		}
		target := strings.TrimSuffix(name, ".br")
		if seen[target] {
			return nil, fmt.Errorf("manifest[%d]: two entries for %s", i, target)
		}
		seen[target] = true
		if !enc && !capgo.IsHexSHA256(strings.ToLower(hash)) {
			return nil, fmt.Errorf("manifest[%d]: file_hash %q", i, hash)
		}
		if err := absURL(str(e.DownloadURL)); err != nil {
			return nil, fmt.Errorf("manifest[%d]: download_url: %w", i, err)
		}
	}
	return &a, nil
}

func absURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

func safePath(p string) error {
	if p == "" || strings.ContainsAny(p, "\\\x00") || strings.HasPrefix(p, "/") {
		return fmt.Errorf("unsafe path %q", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." || seg == "" {
			return fmt.Errorf("unsafe path %q", p)
		}
	}
	return nil
}

// Device is one fake plugin install. It is not safe for concurrent use.
type Device struct {
	// UpdateURL, StatsURL and ChannelURL are the plugin's configured URLs.
	UpdateURL, StatsURL, ChannelURL string
	// Info is the info object sent with every request; Install updates
	// VersionName.
	Info capgo.Info
	// PublicKey is the app's configured publicKey (nil: no encryption).
	PublicKey *rsa.PublicKey
	// Dir holds versions/<version>/ and the delta cache.
	Dir string
	// HTTP is the client; nil means a plain &http.Client{}.
	HTTP *http.Client
}

// Result says how an install went.
type Result struct {
	// Mode is "manifest" or "zip".
	Mode string
	// Bytes counts every byte downloaded; Downloaded and Reused count
	// manifest files fetched and taken from the cache.
	Bytes      int64
	Downloaded int
	Reused     int
}

func (d *Device) client() *http.Client {
	if d.HTTP != nil {
		return d.HTTP
	}
	return &http.Client{}
}

func (d *Device) post(ctx context.Context, method, u string, body any) (*http.Response, []byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "CapacitorUpdater/"+string(d.Info.PluginVersion)+" ("+string(d.Info.AppID)+") "+string(d.Info.Platform)+"/14")
	resp, err := d.client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp, raw, err
}

// Check sends the update check and decodes the answer with DecodeAnswer.
// raw is the body as received.
func (d *Device) Check(ctx context.Context) (*AppVersion, []byte, error) {
	resp, raw, err := d.post(ctx, http.MethodPost, d.UpdateURL, &d.Info)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		return nil, raw, fmt.Errorf("too_many_requests (Retry-After %q)", resp.Header.Get("Retry-After"))
	}
	a, err := DecodeAnswer(raw)
	if err != nil {
		return nil, raw, fmt.Errorf("answer %s: %w", raw, err)
	}
	return a, raw, nil
}

// Stat sends stats events (the info object plus action and version names)
// as one array, as the plugin's queue does, and returns the HTTP status.
func (d *Device) Stat(ctx context.Context, action, versionName, oldVersionName string) (int, error) {
	st := capgo.Stat{Info: d.Info, Action: capgo.Str(action), VersionName: capgo.Str(versionName), OldVersionName: capgo.Str(oldVersionName)}
	resp, _, err := d.post(ctx, http.MethodPost, d.StatsURL, []capgo.Stat{st})
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// Channel calls channelUrl with method (POST setChannel with channel, PUT
// getChannel) and returns the status and decoded object.
func (d *Device) Channel(ctx context.Context, method, channel string) (int, map[string]any, error) {
	in := d.Info
	in.Channel = capgo.Str(channel)
	resp, raw, err := d.post(ctx, method, d.ChannelURL, &in)
	if err != nil {
		return 0, nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("channel answer %s: %w", raw, err)
	}
	return resp.StatusCode, out, nil
}

// VersionDir is where a version's files are installed.
func (d *Device) VersionDir(version string) string {
	return filepath.Join(d.Dir, "versions", version)
}

func (d *Device) cacheDir() string { return filepath.Join(d.Dir, "capgo_downloads") }

func (d *Device) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return nil, err
	}
	if resp.ContentLength >= 0 && int64(len(b)) != resp.ContentLength {
		return nil, fmt.Errorf("GET %s: %d bytes, Content-Length %d", u, len(b), resp.ContentLength)
	}
	return b, nil
}

// ResetToBuiltin does what the plugin does on a builtin answer (_reset):
// the bundle inside the app becomes current.
func (d *Device) ResetToBuiltin(a *AppVersion) error {
	if !a.IsBuiltin() {
		return errors.New("not a builtin answer")
	}
	d.Info.VersionName = capgo.Builtin
	return nil
}

// Install downloads and installs an update answer, then makes it the
// current bundle (VersionName).
func (d *Device) Install(ctx context.Context, a *AppVersion) (*Result, error) {
	if !a.IsUpdate() {
		return nil, errors.New("not an update answer")
	}
	version := str(a.Version)
	dir := d.VersionDir(version)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	var res *Result
	var err error
	if len(a.Manifest) > 0 {
		res, err = d.installManifest(ctx, a, dir)
	} else {
		res, err = d.installZip(ctx, a, dir)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := d.cacheBundleFiles(dir); err != nil {
		return nil, err
	}
	d.Info.VersionName = capgo.Str(version)
	return res, nil
}

func (d *Device) installManifest(ctx context.Context, a *AppVersion, dir string) (*Result, error) {
	if str(a.SessionKey) != "" {
		return nil, errors.New("encrypted manifests are not supported by this client")
	}
	res := &Result{Mode: "manifest"}
	var bytesN atomic.Int64
	var downloaded, reused atomic.Int64
	// Eight downloads at a time, as the plugin does; every file is tried
	// and the first failure is reported.
	var g errgroup.Group
	g.SetLimit(8)
	for _, e := range a.Manifest {
		g.Go(func() error {
			name := str(e.FileName)
			hash := strings.ToLower(str(e.FileHash))
			target := strings.TrimSuffix(name, ".br")
			dst := filepath.Join(dir, filepath.FromSlash(target))
			cached := filepath.Join(d.cacheDir(), hash+"_"+path.Base(target))
			if b, err := os.ReadFile(cached); err == nil {
				reused.Add(1)
				return writeFile(dst, b)
			}
			b, err := d.get(ctx, str(e.DownloadURL))
			if err != nil {
				return fmt.Errorf("download_manifest_file_fail %s: %w", name, err)
			}
			bytesN.Add(int64(len(b)))
			downloaded.Add(1)
			if strings.HasSuffix(name, ".br") {
				if b, err = io.ReadAll(brotli.NewReader(bytes.NewReader(b))); err != nil {
					return fmt.Errorf("download_manifest_brotli_fail %s: %w", name, err)
				}
			}
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hash {
				return fmt.Errorf("download_manifest_checksum_fail %s", name)
			}
			return writeFile(dst, b)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	res.Bytes, res.Downloaded, res.Reused = bytesN.Load(), int(downloaded.Load()), int(reused.Load())
	return res, nil
}

func (d *Device) installZip(ctx context.Context, a *AppVersion, dir string) (*Result, error) {
	b, err := d.get(ctx, str(a.URL))
	if err != nil {
		return nil, fmt.Errorf("download_fail: %w", err)
	}
	res := &Result{Mode: "zip", Bytes: int64(len(b))}
	want := str(a.Checksum)
	if sk := str(a.SessionKey); sk != "" && strings.Count(sk, ":") == 1 {
		if d.PublicKey == nil {
			return nil, errors.New("decrypt_fail: encrypted bundle but no public key")
		}
		key, iv, err := capgokey.DecryptSession(d.PublicKey, sk)
		if err != nil {
			return nil, fmt.Errorf("decrypt_fail: %w", err)
		}
		if b, err = capgokey.DecryptAESCBC(key, iv, b); err != nil {
			return nil, fmt.Errorf("decrypt_fail: %w", err)
		}
	}
	if d.PublicKey != nil {
		if want, err = capgokey.DecryptChecksum(d.PublicKey, want); err != nil {
			return nil, fmt.Errorf("checksum_fail: %w", err)
		}
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); want != "" && got != want {
		return nil, fmt.Errorf("checksum_fail: zip hashes to %s, answer says %s", got, want)
	}
	if err := unzip(b, dir); err != nil {
		return nil, err
	}
	return res, nil
}

// unzip extracts a bundle zip as the plugin does: "\" names and zip-slip
// paths are refused, and a single top-level folder is flattened.
func unzip(b []byte, dir string) error {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return fmt.Errorf("unzip_fail: %w", err)
	}
	prefix := ""
	if _, err := zr.Open("index.html"); err != nil {
		tops := map[string]bool{}
		for _, f := range zr.File {
			top, _, _ := strings.Cut(f.Name, "/")
			tops[top] = true
		}
		if len(tops) == 1 {
			for t := range tops {
				prefix = t + "/"
			}
		}
	}
	for _, f := range zr.File {
		if strings.Contains(f.Name, "\\") {
			return fmt.Errorf("windows_path_fail: %s", f.Name)
		}
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		name := strings.TrimPrefix(f.Name, prefix)
		if err := safePath(name); err != nil {
			return fmt.Errorf("canonical_path_fail: %w", err)
		}
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("unzip_fail: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(rc, 512<<20))
		rc.Close()
		if err != nil {
			return fmt.Errorf("unzip_fail: %w", err)
		}
		if err := writeFile(filepath.Join(dir, filepath.FromSlash(name)), data); err != nil {
			return err
		}
	}
	return nil
}

// cacheBundleFiles copies every file of an installed bundle into the delta
// cache under <sha256>_<basename>, as the plugin does after any download.
func (d *Device) cacheBundleFiles(dir string) error {
	return filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		return writeFile(filepath.Join(d.cacheDir(), hex.EncodeToString(sum[:])+"_"+filepath.Base(p)), b)
	})
}

func writeFile(p string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

// Files returns the files of an installed version: path → SHA-256 hex.
func (d *Device) Files(version string) (map[string]string, error) {
	dir := d.VersionDir(version)
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		sum := sha256.Sum256(b)
		out[filepath.ToSlash(rel)] = hex.EncodeToString(sum[:])
		return nil
	})
	return out, err
}

// ZipHashes returns the files of a bundle zip as the plugin would install
// them (single top folder flattened): path → SHA-256 hex.
func ZipHashes(b []byte) (map[string]string, error) {
	dir, err := os.MkdirTemp("", "capgotest-zip-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := unzip(b, dir); err != nil {
		return nil, err
	}
	d := &Device{Dir: dir}
	return d.Files("..")
}
