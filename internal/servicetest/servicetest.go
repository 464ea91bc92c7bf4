// Package servicetest gives tests the real PostgreSQL and S3-compatible
// servers that scripts/test-services.sh starts (and .ci/run starts before
// the tests): a fresh database or bucket per test, or a PostgreSQL server
// of the test's own that it can stop and restart.
//
// A test whose server is missing skips with a loud message, so `go test`
// works on a laptop without them; under CAPSTAN_REQUIRE_SERVICES=1 (CI) the
// skip is a failure instead, so a broken service setup cannot pass
// unnoticed.
package servicetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Environment variables scripts/test-services.sh exports.
const (
	EnvPostgres = "CAPSTAN_TEST_POSTGRES"
	EnvPGBin    = "CAPSTAN_TEST_PG_BIN"
	EnvS3       = "CAPSTAN_TEST_S3"
	EnvRequire  = "CAPSTAN_REQUIRE_SERVICES"
)

// Missing skips the test, loudly, because a server it needs is not there,
// or fails it when CAPSTAN_REQUIRE_SERVICES=1.
func Missing(t testing.TB, what string) {
	t.Helper()
	msg := fmt.Sprintf("SKIPPED: %s; start the servers with: eval \"$(scripts/test-services.sh start)\"", what)
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s (%s=1: the shared-store tests must run)", msg, EnvRequire)
	}
	t.Skip(msg)
}

func name(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Postgres creates an empty database on the test server and returns its
// URL; the database is dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(EnvPostgres)
	if admin == "" {
		Missing(t, EnvPostgres+" is not set (no PostgreSQL server)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		Missing(t, fmt.Sprintf("PostgreSQL at %s does not answer: %v", EnvPostgres, err))
	}
	db := name("capstan_test_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		conn.Close(ctx)
		t.Fatalf("create database: %v", err)
	}
	conn.Close(ctx)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, admin); err == nil {
			conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
			conn.Close(ctx)
		}
	})
	u, _ := url.Parse(admin)
	u.Path = "/" + db
	return u.String()
}

// S3Server is how to reach the test S3 server.
type S3Server struct {
	Endpoint, AccessKey, SecretKey string
}

// URL is the s3:// blobs URL of bucket on this server.
func (s S3Server) URL(bucket string) string {
	return "s3://" + bucket + "?endpoint=" + s.Endpoint + "&secure=false"
}

// Env is the environment a process needs for the server's credentials.
func (s S3Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey}
}

// S3 creates an empty bucket on the test server and returns the server
// and the bucket's name.
func S3(t testing.TB) (S3Server, string) {
	t.Helper()
	raw := os.Getenv(EnvS3)
	if raw == "" {
		Missing(t, EnvS3+" is not set (no S3-compatible server)")
	}
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		t.Fatalf("%s=%q: want http://ACCESS:SECRET@HOST:PORT", EnvS3, raw)
	}
	secret, _ := u.User.Password()
	srv := S3Server{Endpoint: u.Host, AccessKey: u.User.Username(), SecretKey: secret}
	c, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bucket := strings.ReplaceAll(name("capstan-test-"), "_", "-")
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		Missing(t, fmt.Sprintf("S3 server at %s refuses to create a bucket: %v", EnvS3, err))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err == nil {
				c.RemoveObject(ctx, bucket, o.Key, minio.RemoveObjectOptions{})
			}
		}
		c.RemoveBucket(ctx, bucket)
	})
	return srv, bucket
}

// PGServer is a PostgreSQL server of one test's own, in its temp folder.
type PGServer struct {
	bin, data, sock string
	t               testing.TB
}

// OwnPostgres starts a PostgreSQL server for this test alone (initdb in
// a temp folder), stopped when the test ends. Tests that stop or restart
// the database use it, so they disturb no other test.
func OwnPostgres(t testing.TB) *PGServer {
	t.Helper()
	bin := os.Getenv(EnvPGBin)
	if bin == "" {
		Missing(t, EnvPGBin+" is not set (no PostgreSQL binaries)")
	}
	dir, err := os.MkdirTemp("", "capstan-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	s := &PGServer{bin: bin, data: filepath.Join(dir, "data"), sock: dir, t: t}
	if os.Getuid() == 0 {
		// PostgreSQL refuses to run as root.
		if out, err := exec.Command("chown", "nobody", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
	if out, err := s.cmd("initdb", "-D", s.data, "-U", "capstan", "-A", "trust", "--no-sync").CombinedOutput(); err != nil {
		Missing(t, fmt.Sprintf("initdb failed: %v %s", err, out))
	}
	s.Start()
	t.Cleanup(func() { s.cmd("pg_ctl", "-D", s.data, "-m", "immediate", "stop").Run() })
	return s
}

func (s *PGServer) cmd(tool string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, tool)
	if os.Getuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "nobody", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

// URL is the server's connection string. The server listens on a Unix
// socket in its own folder only: no port to pick, none to collide.
func (s *PGServer) URL() string {
	return "postgres://capstan@/postgres?host=" + url.QueryEscape(s.sock)
}

// Start starts the server and waits until it accepts connections.
func (s *PGServer) Start() {
	s.t.Helper()
	out, err := s.cmd("pg_ctl", "-D", s.data, "-l", filepath.Join(s.sock, "server.log"), "-w", "-t", "60",
		"-o", "-k "+s.sock+" -c listen_addresses= -c fsync=off", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.sock, "server.log"))
		s.t.Fatalf("pg_ctl start: %v %s\n%s", err, out, log)
	}
}

// Stop stops the server at once, as a crash would (immediate mode: open
// transactions are lost, committed ones are not).
func (s *PGServer) Stop() {
	s.t.Helper()
	if out, err := s.cmd("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		s.t.Fatalf("pg_ctl stop: %v %s", err, out)
	}
}
