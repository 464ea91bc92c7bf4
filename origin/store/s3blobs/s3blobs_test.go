package s3blobs

import (
	"context"
	"testing"

	"github.com/capstan-ota/capstan/internal/servicetest"
	"github.com/capstan-ota/capstan/origin/store"
	"github.com/capstan-ota/capstan/origin/store/storetest"
)

func TestBlobs(t *testing.T) {
	storetest.Blobs(t, func(t *testing.T) store.Blobs {
		srv, bucket := servicetest.S3(t)
		cfg, err := ParseURL(srv.URL(bucket))
		if err != nil {
			t.Fatal(err)
		}
		cfg.AccessKey, cfg.SecretKey, cfg.TmpDir = srv.AccessKey, srv.SecretKey, t.TempDir()
		s, err := New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestSweeper: what garbage collection needs of the store.
func TestSweeper(t *testing.T) {
	storetest.Sweeper(t, func(t *testing.T) store.Blobs {
		srv, bucket := servicetest.S3(t)
		cfg, err := ParseURL(srv.URL(bucket))
		if err != nil {
			t.Fatal(err)
		}
		cfg.AccessKey, cfg.SecretKey, cfg.TmpDir = srv.AccessKey, srv.SecretKey, t.TempDir()
		s, err := New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Config
		bad  bool
	}{
		{in: "s3://releases?endpoint=minio:9000&secure=false", want: Config{Bucket: "releases", Endpoint: "minio:9000"}},
		{in: "s3://releases/capstan/prod?region=eu-west-1", want: Config{Bucket: "releases", Prefix: "capstan/prod/", Endpoint: "s3.amazonaws.com", Region: "eu-west-1", Secure: true}},
		{in: "s3://b?endpoint=x&create=true", want: Config{Bucket: "b", Endpoint: "x", Secure: true, CreateBucket: true}},
		{in: "s3://key:secret@b?endpoint=x", bad: true},
		{in: "s3://b?endpoint=x&secure=maybe", bad: true},
		{in: "s3://b?endpont=x", bad: true},
		{in: "https://b", bad: true},
	} {
		got, err := ParseURL(c.in)
		if (err != nil) != c.bad || (!c.bad && got != c.want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v (error %v)", c.in, got, err, c.want, c.bad)
		}
	}
}
