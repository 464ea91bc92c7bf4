package release

import (
	"encoding/json"
	"net/url"
	"strings"
	"time"
)

// Document types of the origin's statements about itself and about the
// objects it derives from releases.
const (
	TypeOrigin  = "capstan.origin/v1"
	TypeDerived = "capstan.derived/v1"
)

// DerivedHeader is the HTTP header in which the origin sends the Derived
// statement of a patch or Capgo payload with the object itself: base64 of
// the JSON envelope.
const DerivedHeader = "Capstan-Statement"

// MaxStatementBytes bounds an encoded statement or its envelope.
const MaxStatementBytes = 4096

// Origin is the origin's statement that URL is the API of an origin of
// the cluster. It is signed by the origin key and served at that URL
// (GET /v1/origin/statement), so a gossip member that merely announces
// role "origin" with a URL of its own cannot show one: edges send device
// events (with the events token) and pull blobs and patches only from
// URLs whose statement verifies. It expires so that a URL an origin no
// longer uses stops being trusted.
type Origin struct {
	Type    string    `json:"type"`
	URL     string    `json:"url"`
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
}

// Validate checks the statement's fields.
func (o *Origin) Validate() error {
	if o.Type != TypeOrigin {
		return invalid("origin statement type %q", o.Type)
	}
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(o.URL) > 256 {
		return invalid("origin statement URL %q is not an http(s) base URL of at most 256 bytes", o.URL)
	}
	if o.Expires.Before(o.Issued) {
		return invalid("origin statement expires before it is issued")
	}
	return nil
}

// Encode returns the canonical encoding of the statement.
func (o *Origin) Encode() ([]byte, error) {
	oo := *o
	oo.Type = TypeOrigin
	if err := oo.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(&oo)
}

// DecodeOrigin parses and validates an origin statement.
func DecodeOrigin(b []byte) (*Origin, error) {
	if len(b) > MaxStatementBytes {
		return nil, invalid("origin statement of %d bytes is over the limit", len(b))
	}
	var o Origin
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, invalid("origin statement: %v", err)
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &o, nil
}

// Origin decodes the envelope's signed bytes as an origin statement.
func (e *Envelope) Origin() (*Origin, error) { return DecodeOrigin(e.Signed) }

// Derived is the origin's statement of what it serves at Path, an object
// it derives from a release and names by what it was made from rather
// than by its own hash: a patch (/v1/patches/{base}/{target}) or a Capgo
// per-file payload (/v1/capgo/br/{file}). It gives the object's SHA-256
// and size. Edges cache such an object only if its bytes hash to what the
// statement says, so an origin URL that serves garbage (or a tampering
// proxy) cannot poison their caches under the real path. Devices need no
// statement: they verify every file they install against the signed
// manifest. A statement has no expiry: the bytes it names stay a correct
// answer for Path.
type Derived struct {
	Type   string `json:"type"`
	Path   string `json:"path"`
	SHA256 Hash   `json:"sha256"`
	Size   int64  `json:"size"`
}

// Validate checks the statement's fields.
func (d *Derived) Validate() error {
	if d.Type != TypeDerived {
		return invalid("derived-object statement type %q", d.Type)
	}
	if !strings.HasPrefix(d.Path, "/v1/") || len(d.Path) > 512 {
		return invalid("derived-object statement path %q", d.Path)
	}
	if d.SHA256.IsZero() || d.Size < 0 {
		return invalid("derived-object statement names no content hash or a negative size")
	}
	return nil
}

// Encode returns the canonical encoding of the statement.
func (d *Derived) Encode() ([]byte, error) {
	dd := *d
	dd.Type = TypeDerived
	if err := dd.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(&dd)
}

// DecodeDerived parses and validates a derived-object statement.
func DecodeDerived(b []byte) (*Derived, error) {
	if len(b) > MaxStatementBytes {
		return nil, invalid("derived-object statement of %d bytes is over the limit", len(b))
	}
	var d Derived
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, invalid("derived-object statement: %v", err)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// Derived decodes the envelope's signed bytes as a derived-object
// statement.
func (e *Envelope) Derived() (*Derived, error) { return DecodeDerived(e.Signed) }
