package release

// MaxChannelsPerApp bounds the channels one app may have. The origin
// refuses to create more, and every gossip node refuses to hold more, so
// one app (or a forger) cannot crowd out the others within the cluster's
// overall channel limit.
const MaxChannelsPerApp = 256
