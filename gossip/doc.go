// Package gossip spreads origin-signed channel records (release.Channel in a
// release.Envelope) across a Capstan fleet with hashicorp/memberlist, and
// tells every node which other nodes exist, what role they play and where
// their HTTP API lives.
//
// # What travels
//
// A channel record says which release a channel ("app/channel") serves. It is
// small (about 400–600 bytes signed), so the whole signed envelope travels in
// one gossip packet: an edge that receives it can answer update checks at
// once, with no round trip to an origin, and can hand the exact signed bytes
// to devices, which verify them themselves. A record message is limited to
// MaxRecordBytes; Publish refuses a bigger one with ErrRecordTooLarge.
//
// # Consistency model
//
// The package is eventually consistent per channel, and monotonic:
//
//   - Every node keeps only the newest record per channel, ordered by Seq.
//     A record whose Seq is not larger than the one held is ignored: it is
//     never stored, never relayed and never reported through OnRecord,
//     whatever order the network delivers records in. A node therefore never
//     goes back to an older record.
//   - A record is first spread by broadcast. memberlist sends a broadcast only
//     from the node that queued it, so every node re-queues (relays) a record
//     the first time it accepts it; a newer record for the same channel
//     replaces an older one still waiting in the queue. On a LAN this reaches
//     every node of a small fleet in a few gossip rounds (well under a
//     second for 10 nodes with DefaultConfig).
//   - Broadcast is lossy (UDP), so full state is repaired by push/pull: at
//     every join and every PushPullInterval two nodes exchange all their
//     newest records over TCP. A node that joins late, restarts, or comes back
//     after a partition receives everything when it (re)joins.
//   - The Verify hook runs before a record is stored or relayed, so a node
//     with a Verify hook never spreads a record it rejects. Gossip itself is
//     not trusted: memberlist encryption (SecretKey) only keeps strangers out;
//     the origin's signature is what makes a record true.
//   - Two different records with the same Seq for the same channel are a bug
//     at the origin; the first one a node accepts wins on that node.
//
// Membership (who is alive, with which Meta) is memberlist's SWIM protocol: a
// node that Leaves disappears from the others' Members at once; a node that
// dies is removed after memberlist's suspicion timeout (seconds).
//
// # Concurrency
//
// All methods of Node are safe for concurrent use. The Verify and OnRecord
// hooks are called serially (never concurrently with each other or
// themselves) from memberlist's receive paths and from Publish; they must
// return quickly and must not call Publish.
package gossip
