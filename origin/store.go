package origin

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
)

// Key layout of the origin's records (store.Records: Badger for one
// origin, PostgreSQL for several).
const (
	pfxApp       = "a/" // a/<app> → App
	pfxRelease   = "r/" // r/<app>/<version> → release.Record
	pfxReleaseID = "i/" // i/<id> → "<app>/<version>"
	pfxChannel   = "c/" // c/<app>/<channel> → latest signed channel envelope
	pfxHistory   = "h/" // h/<app>/<channel>/<seq> → every channel envelope ever signed
	pfxKey       = "k/" // k/<sha256 of api key> → wire.APIKey
	pfxPatch     = "p/" // p/<from>/<to> → patch blob hash
)

// Sentinel errors the API maps to HTTP statuses.
var (
	ErrNotFound = store.ErrNotFound
	ErrConflict = errors.New("already exists")
)

// App is an application known to the origin.
type App struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	// RequireSigning refuses uploads without a valid release signature.
	// An app with ReleaseKeys requires signatures anyway unless
	// AllowUnsigned says otherwise (SigningRequired, decision 103).
	RequireSigning bool `json:"require_signing,omitempty"`
	// AllowUnsigned, set by an explicit `app set --no-require-signing`,
	// accepts unsigned uploads although release keys are registered.
	AllowUnsigned bool `json:"allow_unsigned,omitempty"`
	// ReleaseKeys are the CI keys whose signatures the origin accepts on
	// this app's manifests (see apps.go).
	ReleaseKeys []ed25519.PublicKey `json:"release_keys,omitempty"`
	// EncryptKey, if set, is the app's X25519 public key: releases are
	// stored and served encrypted (see seal.go).
	EncryptKey []byte `json:"encrypt_key,omitempty"`
}

// SigningRequired reports whether uploads must carry a signature by one of
// the app's release keys: when asked (RequireSigning), and whenever release
// keys are registered, unless unsigned uploads were allowed explicitly.
// Devices of an app that registered a release key trust that key, so an
// unsigned release would reach the channel and fail on every device.
func (a *App) SigningRequired() bool {
	return a.RequireSigning || len(a.ReleaseKeys) > 0 && !a.AllowUnsigned
}

func getJSON(txn store.Txn, key string, v any) error {
	b, err := txn.Get(key)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func setJSON(txn store.Txn, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set(key, b)
}

func releaseKey(app, version string) string { return pfxRelease + app + "/" + version }
func channelKey(app, ch string) string      { return pfxChannel + app + "/" + ch }
func historyKey(app, ch string, seq uint64) string {
	return fmt.Sprintf("%s%s/%s/%020d", pfxHistory, app, ch, seq)
}

// records is the origin's handle on its store.Records: Badger-shaped
// View and Update whose transactions are bounded by txnTimeout and end when
// the server closes, so a database that stops answering yields an error
// rather than a request that hangs.
type records struct {
	r   store.Records
	ctx context.Context // the server's lifetime: cancelled by Close
}

// txnTimeout bounds one records transaction (retries included). Records
// transactions are small; a blob-sized wait means the database is away.
const txnTimeout = 30 * time.Second

func (d *records) View(fn func(txn store.Txn) error) error {
	ctx, cancel := context.WithTimeout(d.ctx, txnTimeout)
	defer cancel()
	return d.r.View(ctx, fn)
}

func (d *records) Update(fn func(txn store.Txn) error) error {
	ctx, cancel := context.WithTimeout(d.ctx, txnTimeout)
	defer cancel()
	return d.r.Update(ctx, fn)
}

// recordStore reads the origin's records.
type recordStore struct {
	db *records
}

func (s *recordStore) app(id string) (*App, error) {
	var a App
	err := s.db.View(func(txn store.Txn) error { return getJSON(txn, pfxApp+id, &a) })
	if err != nil {
		return nil, fmt.Errorf("app %q: %w", id, err)
	}
	return &a, nil
}

func (s *recordStore) apps() ([]App, error) {
	var out []App
	err := s.db.View(func(txn store.Txn) error {
		return iterate(txn, pfxApp, func(_ string, b []byte) error {
			var a App
			if err := json.Unmarshal(b, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

func iterate(txn store.Txn, prefix string, fn func(key string, val []byte) error) error {
	return txn.Scan(prefix, fn)
}

func (s *recordStore) release(app, version string) (*release.Record, error) {
	var r release.Record
	err := s.db.View(func(txn store.Txn) error { return getJSON(txn, releaseKey(app, version), &r) })
	if err != nil {
		return nil, fmt.Errorf("release %s %s: %w", app, version, err)
	}
	return &r, nil
}

func (s *recordStore) releaseByID(id release.Hash) (*release.Record, error) {
	var r release.Record
	err := s.db.View(func(txn store.Txn) error {
		name, err := txn.Get(pfxReleaseID + id.String())
		if err != nil {
			return err
		}
		return getJSON(txn, pfxRelease+string(name), &r)
	})
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", id, err)
	}
	return &r, nil
}

// releases lists an app's releases, newest semver first.
func (s *recordStore) releases(app string) ([]release.Record, error) {
	var out []release.Record
	err := s.db.View(func(txn store.Txn) error {
		return iterate(txn, pfxRelease+app+"/", func(_ string, b []byte) error {
			var r release.Record
			if err := json.Unmarshal(b, &r); err != nil {
				return err
			}
			r.Envelope = nil // listing does not need file lists
			out = append(out, r)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool {
		a, _ := semver.NewVersion(out[i].Version)
		b, _ := semver.NewVersion(out[j].Version)
		if a == nil || b == nil {
			return out[i].Version > out[j].Version
		}
		return a.GreaterThan(b)
	})
	return out, err
}

func (s *recordStore) channel(app, ch string) (*release.Envelope, *release.Channel, error) {
	var env release.Envelope
	err := s.db.View(func(txn store.Txn) error { return getJSON(txn, channelKey(app, ch), &env) })
	if errors.Is(err, ErrNotFound) {
		if have, lerr := s.channelNames(app); lerr == nil {
			return nil, nil, &noChannelError{app: app, channel: ch, have: have}
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("channel %s/%s: %w", app, ch, err)
	}
	c, err := env.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("channel %s/%s: stored record: %w", app, ch, err)
	}
	return &env, c, nil
}

// channels returns the latest record of every channel (of app, or of all
// apps when app is empty).
func (s *recordStore) channels(app string) ([]*release.Envelope, error) {
	prefix := pfxChannel
	if app != "" {
		prefix += app + "/"
	}
	var out []*release.Envelope
	err := s.db.View(func(txn store.Txn) error {
		return iterate(txn, prefix, func(_ string, b []byte) error {
			var env release.Envelope
			if err := json.Unmarshal(b, &env); err != nil {
				return err
			}
			out = append(out, &env)
			return nil
		})
	})
	return out, err
}

// history returns every record a channel has had, oldest first.
func (s *recordStore) history(app, ch string) ([]*release.Channel, error) {
	var out []*release.Channel
	err := s.db.View(func(txn store.Txn) error {
		var err error
		out, err = historyIn(txn, app, ch)
		return err
	})
	return out, err
}

// historyIn returns every record a channel has had, oldest first, read in
// txn.
func historyIn(txn store.Txn, app, ch string) ([]*release.Channel, error) {
	var out []*release.Channel
	err := iterate(txn, pfxHistory+app+"/"+ch+"/", func(_ string, b []byte) error {
		var env release.Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			return err
		}
		c, err := env.Channel()
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

func putChannel(txn store.Txn, c *release.Channel, env *release.Envelope) error {
	if err := setJSON(txn, channelKey(c.App, c.Channel), env); err != nil {
		return err
	}
	return setJSON(txn, historyKey(c.App, c.Channel, c.Seq), env)
}
