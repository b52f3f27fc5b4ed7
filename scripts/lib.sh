# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Source it; it sets no shell
# options of its own.
#
#   ROOT, TOOLS, VENV          repository root, .tools/ and the tools venv
#   die MESSAGE                print to stderr and exit 1
#   quietly LABEL CMD...       run CMD with its output kept in a log, shown only on failure
#   moto_start [HOST] / moto_stop  a moto_server on a free port of HOST (default the
#                              loopback; MOTO_ENDPOINT, MOTO_PID)
#   export_test_env            the environment the Rust tests expect
#   npm_ci DIR                 `npm ci` in DIR unless node_modules matches its lockfile
#   stamp_of FILE...           a digest of the files' contents

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"

die() {
  printf '%s: %s\n' "$(basename "$0")" "$*" >&2
  exit 1
}

quietly() {
  local label=$1 log
  shift
  mkdir -p "$TOOLS/logs"
  log="$TOOLS/logs/$(printf '%s' "$label" | tr -c 'A-Za-z0-9' '-').log"
  if ! "$@" >"$log" 2>&1; then
    printf '%s: %s failed (%s); last lines of %s:\n' "$(basename "$0")" "$label" "$*" "$log" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

free_port() {
  python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' \
    "${1:-127.0.0.1}"
}

# Starts moto_server on HOST (default 127.0.0.1) and waits until it answers. Exports
# MOTO_ENDPOINT and MOTO_PID and sets an EXIT trap that stops the server, so
# a failing caller does not leave it behind. The port is picked free and then
# bound by moto, so another process can take it in between: retry then.
moto_start() {
  local attempt port host=${1:-127.0.0.1} log="$TOOLS/logs/moto.log"
  [[ -x "$VENV/bin/moto_server" ]] || die "moto_server is missing: run scripts/test-deps"
  mkdir -p "$TOOLS/logs"
  trap moto_stop EXIT
  for attempt in 1 2 3; do
    port=$(free_port "$host")
    "$VENV/bin/moto_server" -H "$host" -p "$port" >"$log" 2>&1 &
    MOTO_PID=$!
    # Cold start of the Python server takes about two seconds here.
    for _ in $(seq 1 150); do
      if ! kill -0 "$MOTO_PID" 2>/dev/null; then
        break
      fi
      if curl -sf -o /dev/null "http://$host:$port/moto-api/data.json"; then
        export MOTO_ENDPOINT="http://$host:$port" MOTO_PID
        return 0
      fi
      sleep 0.1
    done
    moto_stop
    printf 'moto_server did not come up on port %s (attempt %s)\n' "$port" "$attempt" >&2
  done
  tail -n 20 "$log" >&2
  return 1
}

moto_stop() {
  if [[ -n "${MOTO_PID:-}" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
    kill "$MOTO_PID" 2>/dev/null
    wait "$MOTO_PID" 2>/dev/null
  fi
  unset MOTO_PID
}

# Dummy credentials and a fixed region keep the AWS SDK from probing the
# instance metadata address or reading a developer's real profile.
export_test_env() {
  export AWS_EC2_METADATA_DISABLED=true
  export AWS_ACCESS_KEY_ID=test
  export AWS_SECRET_ACCESS_KEY=test
  export AWS_REGION=us-east-1
  export AWS_DEFAULT_REGION=us-east-1
  unset AWS_PROFILE AWS_SESSION_TOKEN
  export NODE_CLIENTS_DIR="$ROOT/tests/node"
}

stamp_of() {
  cat "$@" | sha256sum | cut -d' ' -f1
}

# Installs DIR's npm packages from its lockfile, unless node_modules carries a stamp of the
# same package.json and lockfile (`npm install` writes the lockfile when there is none).
npm_ci() {
  local dir=$1 files=("$1/package.json") want
  [[ -f "$dir/package-lock.json" ]] && files+=("$dir/package-lock.json")
  want=$(stamp_of "${files[@]}")
  [[ "$(cat "$dir/node_modules/.stamp" 2>/dev/null)" == "$want" ]] && return 0
  if [[ -f "$dir/package-lock.json" ]]; then
    (cd "$dir" && quietly "npm ci $(basename "$dir")" npm ci --no-audit --no-fund)
  else
    (cd "$dir" && quietly "npm install $(basename "$dir")" npm install --no-audit --no-fund)
  fi
  stamp_of "$dir/package.json" "$dir/package-lock.json" >"$dir/node_modules/.stamp"
}
