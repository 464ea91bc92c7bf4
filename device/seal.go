package device

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/capstan-ota/capstan/release"
)

// sealedPlan is what a device needs to fetch an encrypted release: the
// opened release key and the ciphertext blob of each file.
type sealedPlan struct {
	key   []byte
	files map[string]release.SealedFile // by manifest path
}

// openSealed fetches and checks the index of an encrypted release and
// opens its key. It returns nil for a plain release. The index is trusted
// through its hash, which the signed channel record names; the key is
// bound to the release ID by the sealing itself.
func (d *Device) openSealed(ctx context.Context, p *plan) (*sealedPlan, error) {
	if p.target.Sealed.IsZero() {
		return nil, nil
	}
	if d.cfg.DecryptKey == nil {
		return nil, fmt.Errorf("%w: release %s is encrypted and this device has no decryption key (--decrypt-key)", ErrVerify, p.target.Version)
	}
	var body []byte
	var errs []error
	for _, e := range uniq(append([]string{p.edge}, d.cfg.Edges...)) {
		err := d.download(ctx, e, "/v1/blobs/"+p.target.Sealed.String(), release.MaxSealedIndexBytes, func(r io.Reader) error {
			var rerr error
			body, rerr = io.ReadAll(r)
			return rerr
		})
		if err == nil && release.Sum(body) != p.target.Sealed {
			err = fmt.Errorf("%w: encrypted release index from %s does not match the signed channel record", ErrVerify, e)
		}
		if err == nil {
			errs = nil
			break
		}
		errs = append(errs, err)
	}
	if errs != nil {
		return nil, fmt.Errorf("device: encrypted release index: %w", errors.Join(errs...))
	}
	idx, err := release.DecodeSealedIndex(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	if idx.Release != p.target.ID || len(idx.Files) != len(p.manifest.Files) {
		return nil, fmt.Errorf("%w: encrypted release index is for another release", ErrVerify)
	}
	key, err := release.OpenKey(d.cfg.DecryptKey, p.target.ID, idx.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	sp := &sealedPlan{key: key, files: make(map[string]release.SealedFile, len(idx.Files))}
	for i, f := range p.manifest.Files {
		sp.files[f.Path] = idx.Files[i]
	}
	return sp, nil
}

// fetchFile downloads one file of the target into staging: the plain blob,
// or the ciphertext blob decrypted on the fly. Either way writeFile checks
// the plaintext against the signed manifest, and the download is bounded
// by the (signed) size.
func (d *Device) fetchFile(ctx context.Context, edge, staging string, f release.File, sp *sealedPlan) error {
	if sp == nil {
		return d.download(ctx, edge, "/v1/blobs/"+f.SHA256.String(), f.Size, func(r io.Reader) error {
			return writeFile(staging, f, r)
		})
	}
	sf, ok := sp.files[f.Path]
	if !ok || sf.Size != release.CipherSize(f.Size) {
		return fmt.Errorf("%w: encrypted release index does not match the manifest at %s", ErrVerify, f.Path)
	}
	return d.download(ctx, edge, "/v1/blobs/"+sf.Blob.String(), sf.Size, func(r io.Reader) error {
		return writeFile(staging, f, release.DecryptReader(sp.key, r))
	})
}
