// Package s3blobs keeps an origin's blobs in an S3-compatible bucket (AWS
// S3, R2, MinIO, Ceph, versitygw …), so that any number of origins share
// them. Objects are named by their SHA-256, so writing one twice is
// harmless and a blob, once there, never changes. See
// docs/decisions/111-postgres-and-s3.md.
package s3blobs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/release"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Config says which bucket to use and how to reach it.
type Config struct {
	// Endpoint is the server's host:port (s3.amazonaws.com, a MinIO …).
	Endpoint string
	// Secure uses HTTPS (default true through ParseURL).
	Secure bool
	// Region of the bucket; empty lets the client find out.
	Region string
	// Bucket holds the blobs; it must exist unless CreateBucket is set.
	Bucket string
	// Prefix is prepended to every object name ("" or e.g. "capstan/").
	Prefix string
	// AccessKey and SecretKey authenticate; empty takes the standard
	// environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
	// MINIO_ROOT_USER …).
	AccessKey, SecretKey string
	// CreateBucket creates Bucket when it is missing.
	CreateBucket bool
	// TmpDir is a local folder where a blob is staged while it is hashed:
	// the object's name is its hash, known only at the end.
	TmpDir string
}

// ParseURL reads s3://BUCKET[/PREFIX]?endpoint=HOST:PORT[&secure=false]
// [&region=R][&create=true]. Credentials never go in the URL (it shows in
// process lists and logs): they come from the environment.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, fmt.Errorf("s3blobs: %w", err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return Config{}, fmt.Errorf("s3blobs: %q: want s3://BUCKET[/PREFIX]?endpoint=HOST:PORT", raw)
	}
	if u.User != nil {
		return Config{}, errors.New("s3blobs: put no credentials in the blobs URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	q := u.Query()
	c := Config{Bucket: u.Host, Endpoint: q.Get("endpoint"), Region: q.Get("region"), Secure: true}
	if c.Endpoint == "" {
		c.Endpoint = "s3.amazonaws.com"
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		c.Prefix = p + "/"
	}
	for name, dst := range map[string]*bool{"secure": &c.Secure, "create": &c.CreateBucket} {
		if v := q.Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("s3blobs: %s=%q: %w", name, v, err)
			}
			*dst = b
		}
	}
	for k := range q {
		switch k {
		case "endpoint", "region", "secure", "create":
		default:
			return Config{}, fmt.Errorf("s3blobs: unknown parameter %q in %s", k, raw)
		}
	}
	return c, nil
}

// Store is an S3-compatible bucket behind store.Blobs.
type Store struct {
	c      *minio.Client
	bucket string
	prefix string
	tmp    string
}

var _ store.Blobs = (*Store)(nil)

// New connects to the bucket and checks that it is there.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" || cfg.TmpDir == "" {
		return nil, errors.New("s3blobs: Bucket and TmpDir are required")
	}
	creds := credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	if cfg.AccessKey == "" {
		creds = credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.EnvMinio{}})
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: cfg.Secure, Region: cfg.Region})
	if err != nil {
		return nil, fmt.Errorf("s3blobs: %w", err)
	}
	if err := os.MkdirAll(cfg.TmpDir, 0o755); err != nil {
		return nil, fmt.Errorf("s3blobs: %w", err)
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3blobs: bucket %s at %s: %w", cfg.Bucket, cfg.Endpoint, classify(err))
	}
	if !ok {
		if !cfg.CreateBucket {
			return nil, fmt.Errorf("s3blobs: bucket %s does not exist at %s (create it, or add &create=true)", cfg.Bucket, cfg.Endpoint)
		}
		if err := c.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			return nil, fmt.Errorf("s3blobs: create bucket %s: %w", cfg.Bucket, classify(err))
		}
	}
	return &Store{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix, tmp: cfg.TmpDir}, nil
}

// Name is the object name of a blob. The two-character folder keeps
// listings and file-system-backed servers from one huge directory.
func (s *Store) Name(h release.Hash) string {
	x := h.String()
	return s.prefix + "blobs/" + x[:2] + "/" + x
}

// Put implements store.Blobs. The content is staged in a local temp file
// while it is hashed, then sent under its hash with its MD5, which the
// server checks; a blob already in the bucket is not sent again.
func (s *Store) Put(ctx context.Context, r io.Reader, limit int64, want release.Hash) (release.Hash, int64, error) {
	if !want.IsZero() {
		if n, err := s.Size(ctx, want); err == nil {
			return want, n, nil
		}
	}
	f, err := os.CreateTemp(s.tmp, "s3-*")
	if err != nil {
		return release.Hash{}, 0, fmt.Errorf("store blob: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = fmt.Errorf("blob is over the limit of %d bytes", limit)
	}
	if err != nil {
		return release.Hash{}, 0, fmt.Errorf("store blob: %w", err)
	}
	var sum release.Hash
	h.Sum(sum[:0])
	if !want.IsZero() && sum != want {
		return release.Hash{}, 0, fmt.Errorf("store blob: %w", store.ErrHashMismatch)
	}
	if size, err := s.Size(ctx, sum); err == nil && size == n {
		return sum, n, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return release.Hash{}, 0, fmt.Errorf("store blob: %w", err)
	}
	_, err = s.c.PutObject(ctx, s.bucket, s.Name(sum), f, n, minio.PutObjectOptions{
		ContentType:    "application/octet-stream",
		SendContentMd5: true,
		// Blobs up to 16 MiB go in one request, bigger ones in 16 MiB parts.
		PartSize: 16 << 20,
	})
	if err != nil {
		return release.Hash{}, 0, fmt.Errorf("store blob %s: %w", sum, classify(err))
	}
	return sum, n, nil
}

// Sync implements store.Blobs: an object is durable once PutObject
// returned, so there is nothing left to do.
func (s *Store) Sync(context.Context) error { return nil }

// Open implements store.Blobs.
func (s *Store) Open(ctx context.Context, h release.Hash) (store.Blob, error) {
	o, err := s.c.GetObject(ctx, s.bucket, s.Name(h), minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", h, classify(err))
	}
	st, err := o.Stat()
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("blob %s: %w", h, classify(err))
	}
	return object{o, st.Size}, nil
}

// Size implements store.Blobs.
func (s *Store) Size(ctx context.Context, h release.Hash) (int64, error) {
	st, err := s.c.StatObject(ctx, s.bucket, s.Name(h), minio.StatObjectOptions{})
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", h, classify(err))
	}
	return st.Size, nil
}

var _ store.Sweeper = (*Store)(nil)

// List implements store.Sweeper: the objects under the blob prefix and
// their last-modified times.
func (s *Store) List(ctx context.Context, fn func(h release.Hash, size int64, written time.Time) error) error {
	for o := range s.c.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + "blobs/", Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list blobs: %w", classify(o.Err))
		}
		name := o.Key[strings.LastIndexByte(o.Key, '/')+1:]
		h, err := release.ParseHash(name)
		if err != nil || o.Key != s.Name(h) {
			continue // not a blob
		}
		if err := fn(h, o.Size, o.LastModified); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Delete implements store.Sweeper.
func (s *Store) Delete(ctx context.Context, h release.Hash) error {
	if err := s.c.RemoveObject(ctx, s.bucket, s.Name(h), minio.RemoveObjectOptions{}); err != nil {
		if err := classify(err); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete blob %s: %w", h, err)
		}
	}
	return nil
}

type object struct {
	*minio.Object
	size int64
}

func (o object) Size() int64 { return o.size }

// classify maps "no such object" to store.ErrNotFound and errors that say
// nothing about the request (the server away, a network error, a 5xx) to
// store.ErrUnavailable.
func classify(err error) error {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchKey || resp.StatusCode == 404:
		return fmt.Errorf("%w: %v", store.ErrNotFound, err)
	case resp.StatusCode >= 500 || resp.StatusCode == 0 && !errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: bucket: %v", store.ErrUnavailable, err)
	}
	return err
}
