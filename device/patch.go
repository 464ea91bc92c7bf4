package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/capstan-ota/capstan/delta"
	"github.com/capstan-ota/capstan/release"
)

// Download modes reported in Result.Mode.
const (
	ModeDelta = "delta" // a patch from the installed release
	ModeFull  = "full"  // the whole release as one compressed stream
	ModeFiles = "files" // file by file, reusing what the device holds
)

// fetchPatch downloads the patch from base to p's target and applies it
// into staging, streaming. A patch is trusted only through the signed
// target manifest: Apply verifies every file it writes.
func (d *Device) fetchPatch(ctx context.Context, p *plan, edge string, baseID release.Hash, staging string) error {
	base := delta.Base{ID: baseID}
	if !baseID.IsZero() {
		cur, err := d.manifestOf(d.st.Manifest)
		if err != nil {
			return err
		}
		dir, err := delta.OpenDir(currentDir(d.cfg.Dir))
		if err != nil {
			return err
		}
		defer dir.Close()
		base.Files, base.Dir = cur.Files, dir
	}
	target := delta.Target{ID: p.target.ID, Files: p.doc.Files}
	total := p.doc.Files.Size
	// A patch is never larger than the compressed release plus framing;
	// anything longer is an endless body.
	limit := total + total/8 + 1<<20
	return d.download(ctx, edge, "/v1/patches/"+baseID.String()+"/"+p.target.ID.String(), limit, func(r io.Reader) error {
		cfg := delta.DefaultApplyConfig()
		// Unchanged files are hard-linked from the installed bundle instead
		// of copied: bundles are never modified in place, and an update then
		// costs only the bytes that changed.
		cfg.LinkCopies = true
		// The install syncs the staging folder once; start each file's
		// disk write as soon as it is done, so that sync has less to wait
		// for.
		cfg.StartWriteback = true
		files, _, err := delta.Apply(ctx, cfg, r, base, target, staging)
		if err != nil {
			return err
		}
		m, err := p.doc.WithFiles(files)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrVerify, err)
		}
		p.manifest = m
		return nil
	})
}

// resetStaging empties a staging folder after a failed attempt.
func resetStaging(staging string) error {
	if err := os.RemoveAll(staging); err != nil {
		return err
	}
	return os.Mkdir(staging, 0o755)
}

// populate fills staging with every file of the target: a patch from the
// installed release if there is one, else the full bundle in one stream,
// else file by file. Each fallback starts from an empty staging folder.
func (d *Device) populate(ctx context.Context, p *plan, staging string) (string, error) {
	var errs []error
	edges := uniq(append([]string{p.edge}, d.order()...))
	attempts := []struct {
		mode string
		base release.Hash
	}{{ModeDelta, d.st.Current.ID}, {ModeFull, release.Hash{}}}
	for _, a := range attempts {
		if a.mode == ModeDelta && (a.base.IsZero() || d.st.Manifest == nil) {
			continue
		}
		if !p.target.Sealed.IsZero() {
			break // encrypted releases have no patches (docs/decisions/042)
		}
		for _, e := range edges {
			err := d.fetchPatch(ctx, p, e, a.base, staging)
			if err == nil {
				return a.mode, nil
			}
			errs = append(errs, fmt.Errorf("%s from %s: %w", a.mode, e, err))
			if rerr := resetStaging(staging); rerr != nil {
				return a.mode, rerr
			}
			if ctx.Err() != nil {
				return a.mode, errors.Join(errs...)
			}
		}
	}
	if err := d.populateFiles(ctx, p, staging); err != nil {
		return ModeFiles, errors.Join(append(errs, err)...)
	}
	return ModeFiles, nil
}
