package release

import "time"

// MaxChannelsPerApp bounds the channels one app may have. The origin
// refuses to create more, and every gossip node refuses to hold more, so
// one app (or a forger) cannot crowd out the others within the cluster's
// overall channel limit.
const MaxChannelsPerApp = 256

// MaxSeqAhead bounds how far a channel record's Seq may be ahead of the
// clock of the node that receives it. The origin sets Seq to at least its
// clock in milliseconds, so a Seq far in the future is a forgery or a
// broken clock; held, it would make every real record of its channel "not
// newer" until the clock caught up.
const MaxSeqAhead = 24 * time.Hour

// SeqTooFarAhead reports whether seq is more than MaxSeqAhead ahead of now
// (Seq read as Unix milliseconds).
func SeqTooFarAhead(seq uint64, now time.Time) bool {
	limit := now.Add(MaxSeqAhead).UnixMilli()
	return limit > 0 && seq > uint64(limit)
}
