package device

import (
	"fmt"
	"time"

	"github.com/capstan-ota/capstan/release"
	"github.com/capstan-ota/capstan/wire"
)

// AnswerCheck is what a client knows when it judges an edge's answer to its
// update check (GET /v1/check): whom it trusts and what it runs. The
// reference device fills it from its state; the bench tool's simulated
// devices, which keep no failed list and follow one named channel, leave
// those fields zero. The two calls below are the one place the rules of a
// check answer are written (docs/protocol.md §1).
type AnswerCheck struct {
	// Keys are the trusted origin and release keys. None: signatures are
	// not checked (a device set up without keys, a bench run without
	// --public-key, or a release the caller has verified before).
	Keys []release.PublicKey
	// App is the app; Channel the channel followed, "" for the app's
	// default channel.
	App, Channel string
	// DeviceID decides the device's place in a rollout.
	DeviceID string
	// Current is the release the client runs (zero: its builtin bundle).
	Current release.Ref
	// Native is the native app version, for minimum native versions and
	// blocked major updates ("" skips those rules).
	Native string
	// Failed are releases that failed on the client: never offered again.
	Failed []release.Hash
	// Seen is the highest seq of each channel's records the client has
	// accepted, by release.Channel.Key: a lower one is a replay. A client
	// following its app's default channel learns the key from the record.
	Seen map[string]uint64
	// Now is the time a record's expiry is compared with.
	Now time.Time
}

// Verdict is what a verified answer tells a client to do.
type Verdict struct {
	// Channel is the verified channel record.
	Channel *release.Channel
	// Target is the release to run: Current when there is nothing to do or
	// the offer is refused, the zero release for the builtin bundle.
	Target release.Ref
	// Reason and Code say why a release the channel offers is refused
	// (Code is a release.Block… code); both empty otherwise.
	Reason, Code string
	// Doc and Release are Target's verified release document and its
	// signed envelope, set by VerifyRelease when Target is to be
	// downloaded; Manifest is its full file list for a format 1 release.
	Doc      *release.Doc
	Release  *release.Envelope
	Manifest *release.Manifest

	offer release.OfferCheck // the policy check, completed by VerifyRelease
}

// VerifyRecord verifies the channel record of an answer (signature, app
// and channel, replay, expiry) and decides what the client should run. The
// caller remembers Channel.Seq as seen, then, when NeedsRelease, calls
// VerifyRelease before it downloads anything.
func (c *AnswerCheck) VerifyRecord(ans *wire.CheckAnswer) (*Verdict, error) {
	if ans.Channel == nil {
		return nil, fmt.Errorf("%w: answer has no channel record", ErrVerify)
	}
	if len(c.Keys) > 0 {
		if err := ans.Channel.Verify(release.KeysFor(c.Keys, release.RoleOrigin)); err != nil {
			return nil, fmt.Errorf("%w: channel record: %w", ErrVerify, err)
		}
	}
	ch, err := ans.Channel.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: channel record: %v", ErrVerify, err)
	}
	if ch.App != c.App || ch.Channel != c.Channel && (c.Channel != "" || !ch.Default) {
		want := c.App + "/" + c.Channel
		if c.Channel == "" {
			want = "the default channel of " + c.App
		}
		return nil, fmt.Errorf("%w: got %s, want %s", ErrWrongRecord, ch.Key(), want)
	}
	if seen := c.Seen[ch.Key()]; ch.Seq < seen {
		return nil, fmt.Errorf("%w: seq %d after %d", ErrReplay, ch.Seq, seen)
	}
	if c.Now.After(ch.Expires) {
		return nil, fmt.Errorf("%w: expired at %s", ErrExpired, ch.Expires.Format(time.RFC3339))
	}
	v := &Verdict{Channel: ch, Target: c.Current}
	target, ok := ch.Target(c.DeviceID, c.Current.ID)
	if !ok || target.ID == c.Current.ID {
		return v, nil
	}
	// The device judges the offer itself rather than trust the edge's
	// status: a release that failed here, or a move back that is no
	// rollback, is refused whatever the edge says.
	v.offer = release.OfferCheck{Target: target, CurrentVersion: c.Current.Version, Native: c.Native, Failed: c.Failed}
	if r := ch.CheckOffer(v.offer); r != nil && (r.Code == release.BlockFailed || r.Code == release.BlockDowngrade) {
		v.Reason, v.Code = r.Reason, r.Code
		return v, nil
	}
	if ans.Status == wire.StatusBlocked {
		v.Reason, v.Code = ans.Reason, ans.Code
		return v, nil
	}
	v.Target = target
	return v, nil
}

// NeedsRelease reports whether the verdict moves the client to a release
// it must download (not the one it runs, not the builtin bundle): its
// release document must then pass VerifyRelease.
func (v *Verdict) NeedsRelease(current release.Ref) bool {
	return v.Target.ID != current.ID && !v.Target.ID.IsZero()
}

// VerifyRelease verifies the release document of an answer whose verdict
// NeedsRelease: the one the record names, signed by a trusted release key,
// for this app and version, and allowed on this client (minimum native
// version, blocked major updates). A refusal leaves Target at Current with
// its Reason and Code, and no error.
func (c *AnswerCheck) VerifyRelease(v *Verdict, ans *wire.CheckAnswer) error {
	target := v.Target
	if ans.Release == nil {
		return fmt.Errorf("%w: the channel offers %s but the edge sent no release document", ErrVerify, target.Version)
	}
	doc, m, err := VerifyDocument(ans.Release, target, c.App, c.Keys)
	if err != nil {
		return err
	}
	offer := v.offer
	offer.Release = doc
	if r := v.Channel.CheckOffer(offer); r != nil {
		v.Reason, v.Code = r.Reason, r.Code
		v.Target = c.Current
		return nil
	}
	v.Doc, v.Manifest, v.Release = doc, m, ans.Release
	return nil
}

// VerifyDocument checks a signed release document: it is release target
// (the same ID, so the same signed bytes), signed by a trusted release key
// (no keys: not checked), for app and target's version. It returns the
// document and, for a format 1 release, its full manifest.
func VerifyDocument(env *release.Envelope, target release.Ref, app string, keys []release.PublicKey) (*release.Doc, *release.Manifest, error) {
	if env.ID() != target.ID {
		return nil, nil, fmt.Errorf("%w: release document %s is not the release %s the signed channel record names", ErrVerify, env.ID(), target.ID)
	}
	if len(keys) > 0 {
		if err := env.Verify(release.KeysFor(keys, release.RoleRelease)); err != nil {
			return nil, nil, fmt.Errorf("%w: release document: %w", ErrVerify, err)
		}
	}
	doc, m, err := env.Release()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: release document: %v", ErrVerify, err)
	}
	if doc.App != app || doc.Version != target.Version {
		return nil, nil, fmt.Errorf("%w: release document is %s %s, the channel names %s %s", ErrVerify, doc.App, doc.Version, app, target.Version)
	}
	return doc, m, nil
}
