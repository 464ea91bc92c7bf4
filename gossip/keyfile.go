package gossip

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/capstan-ota/capstan/release"
)

// Limits of a cluster key file.
const (
	maxKeyFileBytes = 64 << 10
	// MaxClusterKeys bounds the gossip keys of one file: a rotation needs
	// two at a time.
	MaxClusterKeys = 8
)

// KeyFile is the cluster key file: what a node needs to be admitted to the
// cluster and to tell the real origin from a member that only says it is
// one. The origin writes it on its first start; every edge gets a copy.
//
//	# comments
//	gossip-key: <base64 of 32 random bytes>   (the first is sent with; every one is accepted)
//	-----BEGIN PUBLIC KEY-----                  (the origin's public key, Role: origin)
//	…
//
// It holds a secret (the gossip keys): anyone who has it can join the
// cluster. The origin public key in it is not secret.
type KeyFile struct {
	// Keys are the gossip keys. Keys[0] is the one a node encrypts with;
	// a node accepts every one (Config.SecretKey and ExtraKeys).
	Keys [][]byte
	// OriginKeys are the origin's public keys, which sign channel records
	// and origin statements; edges check both against them.
	OriginKeys []release.PublicKey
}

// ParseKeyFile reads a cluster key file. It needs at least one gossip
// key; origin keys are optional (an edge may get them elsewhere).
func ParseKeyFile(b []byte) (*KeyFile, error) {
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("gossip: key file of %d bytes is over %d", len(b), maxKeyFileBytes)
	}
	kf := &KeyFile{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "gossip-key:")
		if !ok {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("gossip: key file line %d: gossip-key is not base64: %w", line, err)
		}
		if err := checkKey(k); err != nil {
			return nil, fmt.Errorf("key file line %d: %w", line, err)
		}
		kf.Keys = append(kf.Keys, k)
		if len(kf.Keys) > MaxClusterKeys {
			return nil, fmt.Errorf("gossip: key file holds more than %d gossip keys", MaxClusterKeys)
		}
	}
	if len(kf.Keys) == 0 {
		return nil, errors.New(`gossip: key file has no "gossip-key:" line`)
	}
	if bytes.Contains(b, []byte("-----BEGIN")) {
		keys, err := release.ParsePublicKeys(b)
		if err != nil {
			return nil, fmt.Errorf("gossip: key file: %w", err)
		}
		for _, k := range keys {
			if k.Role == "" || k.Role == release.RoleOrigin {
				kf.OriginKeys = append(kf.OriginKeys, k)
			}
		}
	}
	return kf, nil
}

// ReadKeyFile reads and parses the cluster key file at path.
func ReadKeyFile(path string) (*KeyFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip: read cluster key file: %w", err)
	}
	kf, err := ParseKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kf, nil
}

// Encode returns the file's text.
func (kf *KeyFile) Encode() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`# Capstan cluster key file. Give every edge a copy: capstan edge --cluster-key FILE.
# The gossip keys are a secret: anyone who has one can join the cluster. Keep this file like a password.
# The first gossip-key is the one nodes send with; every one listed is accepted (key rotation:
# docs/operations.md). The public key below is the origin's; edges trust only what it signs.
`)
	for _, k := range kf.Keys {
		fmt.Fprintf(&b, "gossip-key: %s\n", base64.StdEncoding.EncodeToString(k))
	}
	for _, k := range kf.OriginKeys {
		pem, err := release.EncodePublicKey(k.Key, release.RoleOrigin)
		if err != nil {
			return nil, err
		}
		b.Write(pem)
	}
	return b.Bytes(), nil
}

// eventsTokenLabel is what an events token is derived for, so that the
// token reveals nothing of the gossip key.
const eventsTokenLabel = "capstan events token v1"

// EventsToken derives, from a gossip key, the bearer token edges send
// with device events and origins accept: events are authenticated by the
// cluster key, with no other setting (decision 096).
func EventsToken(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(eventsTokenLabel))
	return hex.EncodeToString(m.Sum(nil))
}

// EventsTokens returns the token of every key of the file: what an origin
// accepts while the cluster key rotates. The first is the one to send.
func (kf *KeyFile) EventsTokens() []string {
	out := make([]string, len(kf.Keys))
	for i, k := range kf.Keys {
		out[i] = EventsToken(k)
	}
	return out
}

// NewClusterKey returns a fresh 32-byte gossip key.
func NewClusterKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails on supported platforms
	return k
}

// CreateKeyFile writes a new cluster key file at path with one gossip key
// (gossipKey, or a fresh one when nil) and the origin's public key, unless
// a file is already there. It reports whether it created the file. The
// file is written 0600 through a temporary file, so a crash never leaves
// half a file.
func CreateKeyFile(path string, gossipKey []byte, origin ed25519.PublicKey) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("gossip: cluster key file: %w", err)
	}
	if gossipKey == nil {
		gossipKey = NewClusterKey()
	}
	if err := checkKey(gossipKey); err != nil {
		return false, err
	}
	kf := &KeyFile{Keys: [][]byte{gossipKey}}
	if origin != nil {
		kf.OriginKeys = []release.PublicKey{{Key: origin, Role: release.RoleOrigin}}
	}
	b, err := kf.Encode()
	if err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".cluster-key-*")
	if err != nil {
		return false, fmt.Errorf("gossip: write cluster key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// Link, not rename: never replace a file another process made
		// in the meantime.
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return false, fmt.Errorf("gossip: write cluster key file: %w", err)
	}
	return true, nil
}
