package release

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
)

// FileListMagic is the first line of a canonical file list.
const FileListMagic = "capstan.files/v1\n"

// MaxFileListBytes bounds an encoded file list: MaxFiles entries of a
// MaxPathLen path each, with their hash, size and mode.
const MaxFileListBytes = int64(len(FileListMagic)) + MaxFiles*(64+1+20+1+4+1+MaxPathLen+1)

// FileSet names a release's whole file list by its size and hash: what a
// release document (TypeReleaseDoc) signs instead of the list itself, so
// that an update answer stays small whatever the number of files. A device
// rebuilds the list from what it installs and checks it against the set.
type FileSet struct {
	// Count is the number of files.
	Count int `json:"count"`
	// Size is the sum of the file sizes in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hash of the canonical file list (EncodeFileList).
	SHA256 Hash `json:"sha256"`
}

// MaxListBytes bounds the encoded file list of the set: what a client may
// read when it downloads the list, before it checks its hash.
func (fs FileSet) MaxListBytes() int64 {
	n := int64(max(fs.Count, 0))
	return int64(len(FileListMagic)) + n*(64+1+20+1+4+1+MaxPathLen+1)
}

// FileSetOf returns the FileSet of files, which must be valid and sorted
// (Manifest.Validate).
func FileSetOf(files []File) FileSet {
	h := sha256.New()
	var line []byte
	h.Write([]byte(FileListMagic))
	var size int64
	for _, f := range files {
		line = appendFileLine(line[:0], f)
		h.Write(line)
		size += f.Size
	}
	return FileSet{Count: len(files), Size: size, SHA256: Hash(h.Sum(nil))}
}

// EncodeFileList returns the canonical bytes of a file list: the line
// FileListMagic, then one line per file in path order,
//
//	<sha256, 64 lowercase hex> SP <size, decimal> SP <mode, octal> SP <path> LF
//
// A text format rather than JSON, so that every client (Go, TypeScript)
// produces the same bytes without an encoder's escaping rules in the way;
// paths hold no control characters (ValidatePath), so LF ends a line. The
// files must be valid and sorted (Manifest.Validate).
func EncodeFileList(files []File) []byte {
	b := make([]byte, 0, len(FileListMagic)+len(files)*100)
	b = append(b, FileListMagic...)
	for _, f := range files {
		b = appendFileLine(b, f)
	}
	return b
}

func appendFileLine(b []byte, f File) []byte {
	b = hex.AppendEncode(b, f.SHA256[:])
	b = append(b, ' ')
	b = strconv.AppendInt(b, f.Size, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(f.Mode), 8)
	b = append(b, ' ')
	b = append(b, f.Path...)
	return append(b, '\n')
}

// DecodeFileList parses canonical file-list bytes. It accepts only the
// canonical encoding (it re-encodes and compares), and checks every path,
// the order and the bounds, so two lists with the same hash are the same
// list.
func DecodeFileList(b []byte) ([]File, error) {
	if int64(len(b)) > MaxFileListBytes {
		return nil, invalid("file list of %d bytes is over the limit", len(b))
	}
	rest, ok := bytes.CutPrefix(b, []byte(FileListMagic))
	if !ok {
		return nil, invalid("file list does not start with %q", FileListMagic[:len(FileListMagic)-1])
	}
	n := bytes.Count(rest, []byte{'\n'})
	if n > MaxFiles {
		return nil, invalid("file list of %d files is over the limit of %d", n, MaxFiles)
	}
	files := make([]File, 0, n)
	for len(rest) > 0 {
		line, tail, ok := bytes.Cut(rest, []byte{'\n'})
		if !ok {
			return nil, invalid("file list does not end with a newline")
		}
		rest = tail
		f, err := parseFileLine(line)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	m := Manifest{Type: TypeRelease, App: "x", Version: "0.0.0", Files: files}
	if err := m.validateFiles(); err != nil {
		return nil, err
	}
	if !bytes.Equal(EncodeFileList(files), b) {
		return nil, invalid("file list is not in canonical form")
	}
	return files, nil
}

func parseFileLine(line []byte) (File, error) {
	var f File
	fields := bytes.SplitN(line, []byte{' '}, 4)
	if len(fields) != 4 || len(fields[0]) != 64 {
		return f, invalid("file list line %.80q is not \"<sha256> <size> <mode> <path>\"", line)
	}
	if _, err := hex.Decode(f.SHA256[:], fields[0]); err != nil {
		return f, invalid("file list line %.80q: hash: %v", line, err)
	}
	size, err := strconv.ParseInt(string(fields[1]), 10, 64)
	if err != nil || size < 0 {
		return f, invalid("file list line %.80q: bad size", line)
	}
	mode, err := strconv.ParseUint(string(fields[2]), 8, 32)
	if err != nil {
		return f, invalid("file list line %.80q: bad mode", line)
	}
	f.Size, f.Mode, f.Path = size, uint32(mode), string(fields[3])
	return f, nil
}

// SortFiles orders files by path, the canonical order (byte order of the
// UTF-8 paths).
func SortFiles(files []File) {
	slices.SortFunc(files, func(a, b File) int { return compareStrings(a.Path, b.Path) })
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
