#!/usr/bin/env bash
# Starts the real servers the shared-store tests need, in a temp folder:
# PostgreSQL (Debian's packages; run as an unprivileged user when called as
# root) and an S3-compatible server (versitygw, built once from the Go module
# proxy into $CAPSTAN_TOOLS, default ~/.cache/capstan-tools).
#
#   eval "$(scripts/test-services.sh start)"   # exports CAPSTAN_TEST_* for go test
#   scripts/test-services.sh stop DIR          # DIR is $CAPSTAN_TEST_SERVICES
#
# What it exports (tests read these; see origin/store/servicetest):
#   CAPSTAN_TEST_POSTGRES   postgres:// URL of a superuser on the running server
#   CAPSTAN_TEST_PG_BIN     folder of initdb/pg_ctl, for tests that run a server of their own
#   CAPSTAN_TEST_S3         http://ACCESS:SECRET@127.0.0.1:PORT of the S3 server
#   CAPSTAN_TEST_SERVICES   the temp folder (logs, data), for stop
# A server that cannot start is reported on stderr and its variable is left
# out: the tests then skip loudly, or fail under CAPSTAN_REQUIRE_SERVICES=1.
set -uo pipefail
VERSITYGW_VERSION=v1.8.0
TOOLS=${CAPSTAN_TOOLS:-$HOME/.cache/capstan-tools}
say() { echo "test-services: $*" >&2; }

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# as_pg runs a command as the user that owns the PostgreSQL data: postgres
# refuses to run as root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}

free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

start_postgres() {
  local dir=$1 bin port
  bin=$(pg_bin) || { say "PostgreSQL is not installed (apt-get install postgresql): shared-store tests will skip"; return 1; }
  mkdir -p "$dir/pg" && chmod 755 "$dir"
  [ "$(id -u)" = 0 ] && chown nobody "$dir/pg"
  as_pg "$bin/initdb" -D "$dir/pg/data" -U capstan -A trust -E UTF8 --no-sync >"$dir/pg/initdb.log" 2>&1 \
    || { say "initdb failed: $(tail -3 "$dir/pg/initdb.log")"; return 1; }
  for _ in 1 2 3; do
    port=$(free_port) || return 1
    # fsync off: these servers hold test data only, and a 2-core CI machine
    # should spend its time on the tests.
    if as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 30 \
      -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null 2>&1; then
      echo "export CAPSTAN_TEST_POSTGRES='postgres://capstan@127.0.0.1:$port/postgres?sslmode=disable'"
      echo "export CAPSTAN_TEST_PG_BIN='$bin'"
      return 0
    fi
  done
  say "PostgreSQL did not start: $(tail -3 "$dir/pg/server.log" 2>/dev/null)"
  return 1
}

versitygw_bin() {
  local b=$TOOLS/versitygw-$VERSITYGW_VERSION
  if [ ! -x "$b" ]; then
    mkdir -p "$TOOLS"
    say "building versitygw $VERSITYGW_VERSION from the Go module proxy (once, ~2 min)"
    GOBIN="$TOOLS/build" GOFLAGS=-mod=mod go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" >"$TOOLS/versitygw-build.log" 2>&1 \
      && mv "$TOOLS/build/versitygw" "$b" \
      || { say "versitygw build failed: $(tail -3 "$TOOLS/versitygw-build.log")"; return 1; }
  fi
  echo "$b"
}

start_s3() {
  local dir=$1 bin port key=capstan-test secret=capstan-test-secret
  bin=$(versitygw_bin) || return 1
  mkdir -p "$dir/s3/root" "$dir/s3/versions"
  for _ in 1 2 3; do
    port=$(free_port) || return 1
    ROOT_ACCESS_KEY_ID=$key ROOT_SECRET_ACCESS_KEY=$secret setsid "$bin" --port "127.0.0.1:$port" --quiet \
      posix --versioning-dir "$dir/s3/versions" "$dir/s3/root" >"$dir/s3/server.log" 2>&1 </dev/null &
    echo $! >"$dir/s3/pid"
    for _ in $(seq 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "export CAPSTAN_TEST_S3='http://$key:$secret@127.0.0.1:$port'"
        return 0
      fi
      kill -0 "$(cat "$dir/s3/pid")" 2>/dev/null || break
      sleep 0.1
    done
    kill "$(cat "$dir/s3/pid")" 2>/dev/null
  done
  say "S3 server did not start: $(tail -3 "$dir/s3/server.log" 2>/dev/null)"
  return 1
}

stop() {
  local dir=$1 bin
  [ -f "$dir/s3/pid" ] && kill "$(cat "$dir/s3/pid")" 2>/dev/null
  if bin=$(pg_bin) && [ -d "$dir/pg/data" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1
  fi
  rm -rf "$dir"
}

case "${1:-}" in
start)
  dir=$(mktemp -d /tmp/capstan-services.XXXXXX)
  chmod 755 "$dir"
  echo "export CAPSTAN_TEST_SERVICES='$dir'"
  start_postgres "$dir"
  start_s3 "$dir"
  exit 0
  ;;
stop)
  [ -n "${2:-}" ] || { say "usage: $0 stop DIR"; exit 2; }
  stop "$2"
  ;;
*)
  say "usage: eval \"\$($0 start)\"  |  $0 stop DIR"
  exit 2
  ;;
esac
