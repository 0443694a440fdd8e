#!/usr/bin/env bash
# Checks every benchmark peer against the contract in README.md. It starts a throwaway
# PostgreSQL 15 cluster on a free loopback port and seeds the users table. Then it starts
# each peer in turn on another loopback port, checks each route with curl and stops the
# peer by its PID. Prints one line per peer and check and ends with "N passed, N failed".
#
# Usage: bench/peers/smoke.sh [PEER...], where PEER is go, node, python or java (default:
# all four).
#
# Runs as root, because PostgreSQL runs as the postgres user. Needs the peers built by
# setup.sh, curl, and PostgreSQL 15's server binaries in PG_BIN (default
# /usr/lib/postgresql/15/bin).
# Every request goes to 127.0.0.1. The whole run is limited to SMOKE_TIMEOUT_SECONDS.
set -Eeuo pipefail

SMOKE_TIMEOUT_SECONDS=${SMOKE_TIMEOUT_SECONDS:-300}

# Re-run under timeout(1), whose SIGTERM goes to the cleanup trap below.
if [[ -z ${SMOKE_UNDER_TIMEOUT:-} ]]; then
    SMOKE_UNDER_TIMEOUT=1 exec timeout --kill-after=30 "$SMOKE_TIMEOUT_SECONDS" "$0" "$@"
fi

PEERS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD_DIR=$PEERS_DIR/build
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PYTHON=/usr/bin/python3
USER_COUNT=10000
START_TIMEOUT_SECONDS=60
STOP_TIMEOUT_SECONDS=20
# The request timeout that every peer enforces on the API.
REQUEST_TIMEOUT_SECONDS=10

if [[ $# -gt 0 ]]; then
    peers=("$@")
else
    peers=(go node python java)
fi

work_dir=""
pg_started=false
peer_pid=""
lock_pid=""
passed=0
failed=0

log() {
    printf 'smoke.sh: %s\n' "$*" >&2
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $peer_pid ]]; then
        stop_peer >/dev/null || true
    fi
    if [[ -n $lock_pid ]]; then
        kill "$lock_pid" 2>/dev/null || true
        wait "$lock_pid" 2>/dev/null || true
    fi
    if [[ $pg_started == true ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work_dir/data" -m fast -w stop >/dev/null ||
            log "pg_ctl stop failed; the cluster in $work_dir/data may still run"
    fi
    if [[ -n $work_dir ]]; then
        rm -rf "$work_dir"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "received SIGTERM, from timeout(1) after ${SMOKE_TIMEOUT_SECONDS} s or from outside"; exit 143' TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs SQL in the smoke database as the postgres superuser.
sql() {
    PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$pg_port" -U postgres -d peregrine \
        -v ON_ERROR_STOP=1 -qAtX "$@"
}

start_postgres() {
    work_dir=$(mktemp -d /tmp/peregrine-smoke.XXXXXX)
    chown postgres: "$work_dir"
    pg_port=$(free_port)

    runuser -u postgres -- "$PG_BIN/initdb" -D "$work_dir/data" -A trust -U postgres \
        >"$work_dir/initdb.log"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$work_dir/data" -w -t 30 -l "$work_dir/postgres.log" \
        -o "-p $pg_port -k $work_dir -c listen_addresses=127.0.0.1" start >/dev/null
    pg_started=true

    PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -qAtX \
        -c 'CREATE DATABASE peregrine'
    sql <<EOF
CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    email_lower text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (name, email, email_lower)
SELECT 'User ' || i, 'user' || i || '@example.com', 'user' || i || '@example.com'
FROM generate_series(1, $USER_COUNT) AS i;
-- The peers connect as a role that only reads users, so that revoking the grant makes
-- their queries fail for the database error check.
CREATE ROLE peer LOGIN;
GRANT SELECT ON users TO peer;
EOF
    database_url="postgres://peer@127.0.0.1:$pg_port/peregrine"
    log "PostgreSQL is on 127.0.0.1:$pg_port with $USER_COUNT users"
}

peer_command() {
    case $1 in
    go) echo "$BUILD_DIR/go/gopeer" ;;
    node) echo "env NODE_ENV=production node $BUILD_DIR/node/server.js" ;;
    python) echo "$BUILD_DIR/python/venv/bin/python $BUILD_DIR/python/serve.py" ;;
    java) echo "java -jar $BUILD_DIR/java/java-peer.jar" ;;
    *)
        log "unknown peer $1: expected go, node, python or java"
        return 1
        ;;
    esac
}

# Starts the peer in the background and waits until /livez returns 200.
start_peer() {
    local peer=$1 command
    command=$(peer_command "$peer")
    peer_port=$(free_port)
    peer_out=$work_dir/$peer.out
    peer_err=$work_dir/$peer.err

    # shellcheck disable=SC2086 # the command is split into words on purpose
    PORT=$peer_port DATABASE_URL=$database_url $command >"$peer_out" 2>"$peer_err" &
    peer_pid=$!

    local deadline=$((SECONDS + START_TIMEOUT_SECONDS))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$peer_pid" 2>/dev/null; then
            wait "$peer_pid" || true
            peer_pid=""
            return 1
        fi
        if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$peer_port/livez") == 200 ]]; then
            return 0
        fi
        sleep 0.25
    done
    return 1
}

# Sends SIGTERM to the peer and waits for it and its worker processes to exit. Returns 1
# if any of them had to be killed.
stop_peer() {
    local children status=0 pid
    mapfile -t children < <(pgrep -P "$peer_pid" || true)
    kill -TERM "$peer_pid" 2>/dev/null || true

    local deadline=$((SECONDS + STOP_TIMEOUT_SECONDS))
    while ((SECONDS < deadline)) && any_alive "$peer_pid" "${children[@]}"; do
        sleep 0.1
    done
    if any_alive "$peer_pid" "${children[@]}"; then
        status=1
        for pid in "$peer_pid" "${children[@]}"; do
            kill -KILL "$pid" 2>/dev/null || true
        done
    fi
    wait "$peer_pid" 2>/dev/null || true
    peer_pid=""
    return "$status"
}

any_alive() {
    local pid
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then
            return 0
        fi
    done
    return 1
}

report() {
    local peer=$1 check=$2 result=$3
    printf '%-7s %-52s %s\n' "$peer" "$check" "$result"
    if [[ $result == ok* ]]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
}

# Sends GET to the peer and stores the status, content type, time, headers and body in
# response_status, response_type, response_seconds, $response_headers and $response_body.
get() {
    local path=$1
    shift
    response_headers=$work_dir/headers
    response_body=$work_dir/body
    rm -f "$response_headers" "$response_body"
    touch "$response_headers" "$response_body"
    local summary
    summary=$(curl -sS --max-time 20 -D "$response_headers" -o "$response_body" \
        -w '%{http_code}|%{content_type}|%{time_total}' "$@" \
        "http://127.0.0.1:$peer_port$path" 2>&1) || summary='000||0'
    IFS='|' read -r response_status response_type response_seconds <<<"$summary"
}

response_header() {
    grep -i "^$1:" "$response_headers" | head -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'
}

media_type() {
    echo "${response_type%%;*}" | tr '[:upper:]' '[:lower:]'
}

# Checks the body as JSON: "user ID CREATED_AT" or "problem STATUS TITLE [DETAIL]". Prints
# what differs and fails, or prints nothing.
check_json() {
    "$PYTHON" - "$response_body" "$@" <<'EOF'
import json
import re
import sys

path, kind, *expected = sys.argv[1:]
try:
    body = json.load(open(path, encoding="utf-8"))
except ValueError as exc:
    sys.exit(f"body is not JSON: {exc}")

if kind == "user":
    user_id, created_at = int(expected[0]), expected[1]
    want = {"id": user_id, "name": f"User {user_id}",
            "email": f"user{user_id}@example.com", "created_at": created_at}
    if body != want:
        sys.exit(f"body {body} is not {want}")
    if type(body["id"]) is not int:
        sys.exit(f"id {body['id']!r} is not a JSON number")
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["created_at"]):
        sys.exit(f"created_at {body['created_at']!r} is not RFC 3339 UTC with microseconds")
elif kind == "problem":
    status, title = int(expected[0]), expected[1]
    if set(body) != {"type", "title", "status", "detail"}:
        sys.exit(f"problem keys are {sorted(body)}")
    if body["type"] != "about:blank" or body["title"] != title or body["status"] != status:
        sys.exit(f"problem {body} does not have type about:blank, title {title!r}, status {status}")
    if len(expected) > 2 and body["detail"] != expected[2]:
        sys.exit(f"detail {body['detail']!r} is not {expected[2]!r}")
    if not isinstance(body["detail"], str) or not body["detail"]:
        sys.exit("detail is empty")
EOF
}

# Checks status, media type and JSON body of the last response and reports one line.
expect() {
    local peer=$1 check=$2 status=$3 type=$4
    shift 4
    local reason
    if [[ $response_status != "$status" ]]; then
        reason="status $response_status, expected $status"
    elif [[ -n $type && $(media_type) != "$type" ]]; then
        reason="content type '$response_type', expected $type"
    elif [[ $# -gt 0 ]] && ! reason=$(check_json "$@" 2>&1); then
        :
    else
        reason=""
    fi
    if [[ -n $reason ]]; then
        report "$peer" "$check" "FAIL: $reason"
    else
        report "$peer" "$check" "ok"
    fi
}

check_hello() {
    local peer=$1
    get /
    local body
    body=$(cat "$response_body")
    # Jetty writes "text/plain;charset=utf-8": the same media type and parameter.
    local type_compact
    type_compact=$(echo "$response_type" | tr -d ' ' | tr '[:upper:]' '[:lower:]')
    if [[ $response_status != 200 ]]; then
        report "$peer" "GET / is 200 Hello, World!" "FAIL: status $response_status"
    elif [[ $type_compact != "text/plain;charset=utf-8" ]]; then
        report "$peer" "GET / is 200 Hello, World!" "FAIL: content type '$response_type'"
    elif [[ $body != "Hello, World!" ]]; then
        report "$peer" "GET / is 200 Hello, World!" "FAIL: body '$body'"
    else
        report "$peer" "GET / is 200 Hello, World!" "ok ($response_type)"
    fi

    if [[ -z $(response_header X-Request-Id) ]]; then
        report "$peer" "GET / runs no middleware (no X-Request-Id)" "ok"
    else
        report "$peer" "GET / runs no middleware (no X-Request-Id)" "FAIL: X-Request-Id is set"
    fi

    get /livez
    expect "$peer" "GET /livez is 200" 200 ""
}

check_users() {
    local peer=$1 created_at
    created_at=$(sql -c "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM users WHERE id = 1")

    get /api/v1/users/1
    expect "$peer" "GET user 1 is 200 with the row as JSON" 200 application/json user 1 "$created_at"
    if [[ -n $(response_header X-Request-Id) ]]; then
        report "$peer" "a request id is generated and sent back" "ok ($(response_header X-Request-Id))"
    else
        report "$peer" "a request id is generated and sent back" "FAIL: no X-Request-Id"
    fi

    local request_id="smoke-$peer-$RANDOM"
    get /api/v1/users/2 -H "X-Request-Id: $request_id" -H "X-Forwarded-For: 203.0.113.9, 127.0.0.1"
    if [[ $(response_header X-Request-Id) == "$request_id" ]]; then
        report "$peer" "X-Request-Id is echoed" "ok"
    else
        report "$peer" "X-Request-Id is echoed" "FAIL: got '$(response_header X-Request-Id)'"
    fi
    check_access_log "$peer" "$request_id"

    get /api/v1/users/$((USER_COUNT + 1))
    expect "$peer" "GET unknown user is 404 problem" 404 application/problem+json \
        problem 404 "Not Found" "no user with id $((USER_COUNT + 1))"
    get /api/v1/users/9223372036854775807
    expect "$peer" "GET user 2^63-1 is 404 problem" 404 application/problem+json problem 404 "Not Found"

    local bad_id
    for bad_id in abc 0 -1 1.5 9223372036854775808; do
        get "/api/v1/users/$bad_id"
        expect "$peer" "GET user $bad_id is 400 problem" 400 application/problem+json problem 400 "Bad Request"
    done
}

# Checks that one access log line names the method, path, status, request id and the client
# address from X-Forwarded-For. Logs may reach the file a moment after the response.
check_access_log() {
    local peer=$1 request_id=$2 line=""
    for _ in $(seq 10); do
        line=$(grep -F "$request_id" "$peer_out" | head -n 1 || true)
        if [[ -n $line ]]; then
            break
        fi
        sleep 0.2
    done
    local field
    for field in GET /api/v1/users/2 200 203.0.113.9; do
        if [[ $line != *"$field"* ]]; then
            report "$peer" "access log line has method, path, status, id, IP" \
                "FAIL: no '$field' in '${line:-no line with the request id}'"
            return
        fi
    done
    report "$peer" "access log line has method, path, status, id, IP" "ok"
}

check_database_error() {
    local peer=$1
    sql -c 'REVOKE SELECT ON users FROM peer'
    get /api/v1/users/4
    expect "$peer" "a database error is 503 problem" 503 application/problem+json \
        problem 503 "Service Unavailable"
    sql -c 'GRANT SELECT ON users TO peer'
    get /api/v1/users/4
    expect "$peer" "GET user 4 is 200 once the database is back" 200 application/json
}

# Holds an exclusive lock on users so that the peer's query blocks past its request timeout.
check_timeout() {
    local peer=$1
    PGAPPNAME=smoke-lock sql -c 'BEGIN' -c 'LOCK TABLE users IN ACCESS EXCLUSIVE MODE' \
        -c "SELECT pg_sleep($((REQUEST_TIMEOUT_SECONDS * 3)))" -c 'COMMIT' >/dev/null 2>&1 &
    lock_pid=$!
    for _ in $(seq 50); do
        if [[ $(sql -c "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass AND mode = 'AccessExclusiveLock' AND granted") == 1 ]]; then
            break
        fi
        sleep 0.1
    done

    get /api/v1/users/5
    local seconds=${response_seconds%.*}
    # chi's Timeout middleware sends its 504 with no body, so only the status and the time
    # are checked.
    if [[ $response_status != 504 ]]; then
        report "$peer" "a request blocked for 10 s is 504" "FAIL: status $response_status after ${response_seconds} s"
    elif ((seconds < REQUEST_TIMEOUT_SECONDS - 1 || seconds > REQUEST_TIMEOUT_SECONDS + 2)); then
        report "$peer" "a request blocked for 10 s is 504" "FAIL: 504 after ${response_seconds} s"
    else
        report "$peer" "a request blocked for 10 s is 504" "ok (${response_seconds} s, ${response_type:-no body})"
    fi

    sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'smoke-lock'" >/dev/null
    wait "$lock_pid" || true
    lock_pid=""
    get /api/v1/users/5
    expect "$peer" "GET user 5 is 200 after the timeout" 200 application/json
}

check_peer() {
    local peer=$1 failed_before=$failed
    if [[ ! -e $BUILD_DIR ]]; then
        report "$peer" "peer is built" "FAIL: no $BUILD_DIR, run setup.sh first"
        return
    fi
    if ! start_peer "$peer"; then
        report "$peer" "starts, /livez returns 200" "FAIL: see its log below"
        print_peer_logs "$peer"
        if [[ -n $peer_pid ]]; then
            stop_peer || true
        fi
        return
    fi
    report "$peer" "starts, /livez returns 200" "ok (port $peer_port)"

    check_hello "$peer"
    check_users "$peer"
    check_database_error "$peer"
    check_timeout "$peer"

    if stop_peer; then
        report "$peer" "stops on SIGTERM, workers included" "ok"
    else
        report "$peer" "stops on SIGTERM, workers included" "FAIL: killed after ${STOP_TIMEOUT_SECONDS} s"
    fi
    if ((failed > failed_before)); then
        print_peer_logs "$peer"
    fi
}

print_peer_logs() {
    log "last lines of $1's stdout:"
    tail -n 20 "$peer_out" >&2 || true
    log "last lines of $1's stderr:"
    tail -n 20 "$peer_err" >&2 || true
}

for tool in curl psql pgrep runuser "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PYTHON"; do
    if ! command -v "$tool" >/dev/null; then
        log "missing $tool: install it (setup.sh installs curl; PostgreSQL 15 is Debian's postgresql-15)"
        exit 1
    fi
done
if [[ $(id -u) -ne 0 ]]; then
    log "must run as root, because PostgreSQL runs as the postgres user"
    exit 1
fi

start_postgres
for peer in "${peers[@]}"; do
    peer_command "$peer" >/dev/null
    check_peer "$peer"
done

echo "$passed passed, $failed failed"
if ((failed > 0)); then
    exit 1
fi
