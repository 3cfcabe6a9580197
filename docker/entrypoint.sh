#!/bin/sh
# Entrypoint of the AnySync server image.
#
#   run (the default)   prepare, then become anysync-server (it stops on SIGTERM)
#   prepare             First start (an empty /data): create the server home, then the
#                       first admin invite, and print how to connect a client.
#                       Every start: apply the ANYSYNC_* variables to server.toml
#                       (configure.py). The appliance image runs this, then supervisord.
#   init, health, invite, user, fingerprint, --help, ...
#                       that anysync-server command on the home in /data
#   anything else       run as it is: `anysync --version`, `sh`, ...
set -eu

home=${ANYSYNC_SERVER_HOME:-/data}
lib=$(dirname "$0")

command=${1:-run}
case "$command" in
run | prepare) if [ $# -gt 0 ]; then shift; fi ;;
init | health | invite | user | fingerprint | -*) exec anysync-server "$@" ;;
*) exec "$@" ;;
esac

if [ ! -w "$home" ]; then
    echo "anysync: $home is not writable by uid $(id -u); for a bind mount: chown $(id -u):$(id -g) DIR" >&2
    exit 1
fi

if [ ! -f "$home/server.toml" ]; then
    anysync-server --home "$home" init >/dev/null
    touch "$home/.welcome" # until the first invite is printed, even if this start fails
fi

python "$lib/configure.py"

if [ -f "$home/.welcome" ]; then
    invite=$(anysync-server --home "$home" invite create)
    fingerprint=$(anysync-server --home "$home" fingerprint)
    cat <<EOF
================================================================================
AnySync server: new home in $home
  TLS certificate fingerprint: $fingerprint
  First invite (one-time, valid 7 days): $invite

Create your account from a device with the anysync client:
  anysync signup --server ${ANYSYNC_PUBLIC_HOST:-localhost}:${ANYSYNC_PUBLIC_PORT:-65065} --email YOU@EXAMPLE.ORG \\
      --invite $invite --fingerprint $fingerprint

More invites: anysync-server invite create, in this container
(with compose: docker compose exec anysync anysync-server invite create)
================================================================================
EOF
    rm -f "$home/.welcome"
fi

[ "$command" = prepare ] || exec anysync-server --home "$home" run "$@"
