package delta

import "errors"

// Errors returned by Build and Apply, always wrapped with detail; branch on
// them with errors.Is. Any of them on a device means "fall back to the full
// bundle".
var (
	// ErrCorruptPatch: the stream is malformed, truncated, or inconsistent
	// with the target manifest (a record for a file that does not exist,
	// a size that disagrees, trailing bytes).
	ErrCorruptPatch = errors.New("delta: corrupt patch")
	// ErrUnsupportedVersion: the stream has a format version or body codec
	// this build does not know.
	ErrUnsupportedVersion = errors.New("delta: unsupported patch format")
	// ErrWrongBase: the patch was built against another base release, or a
	// base file it needs is missing or has other content.
	ErrWrongBase = errors.New("delta: patch does not apply to this base")
	// ErrWrongTarget: the patch produces another release than the one asked for.
	ErrWrongTarget = errors.New("delta: patch is for another target release")
	// ErrVerify: a produced file's size or SHA-256 differs from the target
	// manifest.
	ErrVerify = errors.New("delta: file does not match the target manifest")
	// ErrTooLarge: a file or the release exceeds a configured limit.
	ErrTooLarge = errors.New("delta: over the size limit")
	// ErrUnsafePath: a manifest path would leave the staging folder, or the
	// folder holds something (such as a symlink) where a file must go.
	ErrUnsafePath = errors.New("delta: unsafe path")
	// ErrBadManifest: a manifest passed in is invalid.
	ErrBadManifest = errors.New("delta: invalid manifest")
	// ErrSource: the blob source could not provide a file, or its bytes do
	// not match the manifest.
	ErrSource = errors.New("delta: blob source")
)
