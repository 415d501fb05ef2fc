#!/usr/bin/env bash
# Brings up what Wharf's tests and a local run need, each only if it is not already up:
# PostgreSQL and Redis (the machine's own), and s3s-fs (installed from the registry once and
# cached in ~/.cache/wharf). Safe to run again and again.
set -euo pipefail

CACHE="${WHARF_CACHE:-$HOME/.cache/wharf}"
S3_PORT="${WHARF_S3S_PORT:-9000}"
S3S_VERSION=0.14.1
export PATH="$CACHE/s3s/bin:$HOME/.cargo/bin:$PATH"

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # port name
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 0.5; done
  echo "services: $2 did not come up on port $1" >&2
  return 1
}

if ! up 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_for 5432 PostgreSQL
fi

if ! up 6379; then
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for 6379 Redis
fi

# Headless Chromium (Debian's package) for the ops page's browser test: installed once, in the
# background; `chromium_up` waits for it.
chromium_log="${CACHE:-$HOME/.cache/wharf}/chromium-install.log"
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "services: installing chromium in the background (once)"
  mkdir -p "$(dirname "$chromium_log")"
  ( (apt-get update -q || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium ) \
    >"$chromium_log" 2>&1 &
  chromium_install=$!
fi
chromium_up() {
  if [ -n "${chromium_install:-}" ]; then
    wait "$chromium_install" || { cat "$chromium_log" >&2; echo "services: installing chromium failed" >&2; return 1; }
    chromium_install=
  fi
}

# promtool, for the metrics test: only the binary, unpacked from Debian's prometheus package into
# the cache (installing the package would also install and start a Prometheus server).
promtool_up() {
  local dir="$CACHE/promtool"
  if [ ! -x "$dir/usr/bin/promtool" ] && ! command -v promtool >/dev/null 2>&1; then
    local tmp
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
          { apt-get update -q >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; } &&
          dpkg -x prometheus_*.deb "$dir"); then
      rm -rf "$tmp"
      echo "services: fetching promtool (Debian's prometheus package) failed" >&2
      return 1
    fi
    rm -rf "$tmp"
  fi
  if [ -x "$dir/usr/bin/promtool" ]; then
    export WHARF_TEST_PROMTOOL="$dir/usr/bin/promtool"
  fi
}

# Python tools the tests and CI run, pinned, in a virtualenv of the cache (once): the Standard
# Webhooks library (the webhook test verifies deliveries with it), the OpenAPI validator and
# openapi-python-client (scripts/openapi-client). Exports WHARF_TEST_PYTHON.
PYTOOLS="$CACHE/pytools"
PYTOOLS_PINS="standardwebhooks==1.1.0 openapi-spec-validator==0.9.0 openapi-python-client==0.29.1"
python_tools_up() {
  if [ ! -f "$PYTOOLS/.pins" ] || [ "$(cat "$PYTOOLS/.pins")" != "$PYTOOLS_PINS" ]; then
    echo "services: installing the Python test tools (once; cached in $PYTOOLS)"
    rm -rf "$PYTOOLS"
    python3 -m venv "$PYTOOLS"
    # shellcheck disable=SC2086
    "$PYTOOLS/bin/pip" install -q $PYTOOLS_PINS
    echo "$PYTOOLS_PINS" >"$PYTOOLS/.pins"
  fi
  export WHARF_TEST_PYTHON="$PYTOOLS/bin/python"
}

# s3s-fs: installed from the registry once (a release build of its own, ~5 minutes on 2 cores),
# in the background, so it compiles while the caller builds Wharf; `s3_up` waits for it and
# starts it. Callers that need S3 call `s3_up` after their own build.
s3s_install_log="$CACHE/s3s-install.log"
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "services: installing s3s-fs $S3S_VERSION in the background (once; cached in $CACHE/s3s)"
  mkdir -p "$CACHE"
  cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$CACHE/s3s" \
    >"$s3s_install_log" 2>&1 &
  s3s_install=$!
fi

s3_up() {
  if [ -n "${s3s_install:-}" ]; then
    if ! wait "$s3s_install"; then
      cat "$s3s_install_log" >&2
      echo "services: installing s3s-fs failed" >&2
      return 1
    fi
    s3s_install=
  fi
  if ! up "$S3_PORT"; then
    echo "services: starting s3s-fs on 127.0.0.1:$S3_PORT"
    mkdir -p "$CACHE/s3-data"
    # Started from its own directory: s3s-fs resolves paths against its working directory, so it
    # must not live in a checkout that may be deleted.
    (cd "$CACHE" && nohup s3s-fs --host 127.0.0.1 --port "$S3_PORT" \
      --access-key "${WHARF_S3_ACCESS_KEY:-wharf}" --secret-key "${WHARF_S3_SECRET_KEY:-wharf-secret}" \
      "$CACHE/s3-data" >"$CACHE/s3s-fs.log" 2>&1 &)
    wait_for "$S3_PORT" s3s-fs
  fi
}

# Run directly (not sourced): bring S3 up too.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then s3_up; fi
