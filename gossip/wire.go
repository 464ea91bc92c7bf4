package gossip

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/capstan-ota/capstan/release"
)

// Limits of what gossip carries. Every decoder checks them before
// allocating.
const (
	// MaxRecordBytes bounds one record message: a 1-byte header plus the
	// signed envelope as JSON. memberlist's packet is 1,400 bytes; minus
	// its compound header (2), encryption (up to 45) and per-message
	// framing (3) a user message can be at most 1,350 bytes, and it only
	// goes out when it fits beside memberlist's own alive/suspect messages
	// (~150 bytes each with our Meta). 1,024 bytes leaves that room and is
	// about twice a real signed channel record (400–600 bytes).
	MaxRecordBytes = 1024

	// MaxChannels bounds the channels a node holds and exchanges in
	// push/pull. A record for a new channel beyond it is dropped.
	MaxChannels = 10_000

	// MaxStateBytes bounds the push/pull state: MaxChannels records of
	// MaxRecordBytes plus framing fit, and it stays under memberlist's own
	// 20 MiB limit (and its warning at 60 % of that).
	MaxStateBytes = 5 + MaxChannels*(2+MaxRecordBytes)
)

// Errors returned by Publish; callers branch on them with errors.Is.
var (
	// ErrRecordTooLarge means the encoded record does not fit one gossip
	// packet (MaxRecordBytes).
	ErrRecordTooLarge = errors.New("gossip: record too large for one gossip packet")
	// ErrStale means a record with the same or a larger Seq is already held
	// for the channel.
	ErrStale = errors.New("gossip: record is not newer than the one held")
	// ErrTooManyChannels means the node already holds MaxChannels
	// channels, or release.MaxChannelsPerApp of the record's app.
	ErrTooManyChannels = errors.New("gossip: too many channels")
	// ErrSeqAhead means the record's Seq is further ahead of the node's
	// clock than Config.MaxSeqAhead.
	ErrSeqAhead = errors.New("gossip: record seq is too far ahead")
)

// Message headers: the first byte of every user message and of the
// push/pull state, so the format can change without confusing old nodes.
const (
	msgRecord   byte = 1 // followed by one envelope, JSON
	stateFormat byte = 1 // followed by uint32 count, then count × (uint16 len, record message)
)

// record is one accepted channel record with its wire form.
type record struct {
	env  *release.Envelope
	ch   *release.Channel
	id   release.Hash // env.ID(), the SHA-256 of the signed bytes
	wire []byte       // msgRecord header + envelope JSON; never modified
}

// encodeRecord builds the record message for env and decodes its channel.
// The envelope is re-encoded once here and forwarded byte for byte after
// that, so the signed bytes never change on the way.
func encodeRecord(env *release.Envelope) (*record, error) {
	if env == nil {
		return nil, errors.New("gossip: nil envelope")
	}
	body, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("gossip: encode envelope: %w", err)
	}
	if 1+len(body) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrRecordTooLarge, 1+len(body), MaxRecordBytes)
	}
	wire := make([]byte, 0, 1+len(body))
	wire = append(wire, msgRecord)
	wire = append(wire, body...)
	rec, err := decodeRecord(wire)
	if err != nil {
		return nil, err
	}
	// json.Marshal compacts and HTML-escapes a RawMessage; if that changed
	// the signed bytes, receivers would see a different document.
	if !bytes.Equal(rec.env.Signed, env.Signed) {
		return nil, errors.New("gossip: signed document is not compact JSON; re-encode it before signing")
	}
	return rec, nil
}

// decodeRecord parses a record message. b is not retained: the record
// keeps its own copy.
func decodeRecord(b []byte) (*record, error) {
	if len(b) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrRecordTooLarge, len(b), MaxRecordBytes)
	}
	if len(b) < 2 || b[0] != msgRecord {
		return nil, errors.New("gossip: not a record message")
	}
	wire := bytes.Clone(b)
	env, err := release.DecodeEnvelope(wire[1:])
	if err != nil {
		return nil, fmt.Errorf("gossip: record: %w", err)
	}
	ch, err := env.Channel()
	if err != nil {
		return nil, fmt.Errorf("gossip: record: %w", err)
	}
	return &record{env: env, ch: ch, id: env.ID(), wire: wire}, nil
}

// encodeState frames record messages for push/pull. The caller keeps the
// total under MaxStateBytes by holding at most MaxChannels records.
func encodeState(recs []*record) []byte {
	size := 5
	for _, r := range recs {
		size += 2 + len(r.wire)
	}
	b := make([]byte, 0, size)
	b = append(b, stateFormat)
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	for _, r := range recs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.wire)))
		b = append(b, r.wire...)
	}
	return b
}

// splitState checks the framing of a push/pull state and returns the record
// messages it holds, as sub-slices of b. Bounds are checked before anything
// is allocated.
func splitState(b []byte) ([][]byte, error) {
	if len(b) == 0 {
		return nil, nil // a node with nothing to say
	}
	if len(b) > MaxStateBytes {
		return nil, fmt.Errorf("gossip: state of %d bytes is over %d", len(b), MaxStateBytes)
	}
	if len(b) < 5 || b[0] != stateFormat {
		return nil, errors.New("gossip: state: unknown format")
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if n > MaxChannels {
		return nil, fmt.Errorf("gossip: state holds %d records, limit %d", n, MaxChannels)
	}
	// Each record takes at least 2+2 bytes, so n is also bounded by len(b).
	if uint64(n)*4 > uint64(len(b)-5) {
		return nil, fmt.Errorf("gossip: state: %d records cannot fit in %d bytes", n, len(b))
	}
	out := make([][]byte, 0, n)
	rest := b[5:]
	for i := uint32(0); i < n; i++ {
		if len(rest) < 2 {
			return nil, errors.New("gossip: state: truncated")
		}
		l := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if l > MaxRecordBytes || l > len(rest) {
			return nil, fmt.Errorf("gossip: state: record %d of %d bytes is truncated or over %d", i, l, MaxRecordBytes)
		}
		out = append(out, rest[:l:l])
		rest = rest[l:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("gossip: state: %d trailing bytes", len(rest))
	}
	return out, nil
}
