#!/bin/sh
# Entrypoint of the all-in-one image: supervisord (PID 1) runs the object store and
# anysync-server with the configuration in /etc/anysync/supervisor (deploy/supervisor in
# the repository; docs/appliance.md). Everything lives in the /data volume:
#   /data                 the server home (server.toml, metadata.db, tls/, ...)
#   /data/s3.secret       the object store's secret key, made on the first start (0600)
#   /data/objectstore/    the object store's data and its credentials file
# The store is MinIO when a `minio` binary is on PATH (an image built FROM this one),
# else SeaweedFS `weed mini`. Other commands (`anysync-server invite create`, `sh`) run
# as they are.
set -eu

if [ $# -gt 0 ]; then
    exec "$@"
fi

home=${ANYSYNC_SERVER_HOME:-/data}
store_dir=$home/objectstore
s3_port=65064
access_key=anysync

# The server reaches the store on loopback; clients at ANYSYNC_PUBLIC_HOST.
ANYSYNC_S3_ENDPOINT=http://127.0.0.1:$s3_port \
    ANYSYNC_S3_BUCKET=anysync \
    ANYSYNC_S3_ACCESS_KEY=$access_key \
    ANYSYNC_S3_SECRET_KEY_FILE=s3.secret \
    ANYSYNC_S3_PUBLIC_ENDPOINT=http://${ANYSYNC_PUBLIC_HOST:-localhost}:${ANYSYNC_PUBLIC_S3_PORT:-$s3_port} \
    /usr/local/lib/anysync/entrypoint.sh prepare

umask 077
mkdir -p "$store_dir/data"
if [ ! -f "$home/s3.secret" ]; then
    python -c 'import secrets; print(secrets.token_hex(32), end="")' >"$home/s3.secret"
fi
secret=$(cat "$home/s3.secret")

if command -v minio >/dev/null; then
    printf 'MINIO_ROOT_USER=%s\nMINIO_ROOT_PASSWORD=%s\n' "$access_key" "$secret" >"$store_dir/minio.env"
    ANYSYNC_OBJECTSTORE_BIN=$(command -v minio)
    ANYSYNC_OBJECTSTORE_ARGS="server $store_dir/data --address :$s3_port --console-address 127.0.0.1:9001"
    ANYSYNC_OBJECTSTORE_ENVIRONMENT="MINIO_CONFIG_ENV_FILE=\"$store_dir/minio.env\""
else
    cat >"$store_dir/seaweedfs-s3.json" <<EOF
{"identities": [
  {"name": "anysync", "credentials": [{"accessKey": "$access_key", "secretKey": "$secret"}],
   "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
  {"name": "anonymous", "actions": []}
]}
EOF
    # One process: master, volume, filer and S3. Only the S3 port is published.
    ANYSYNC_OBJECTSTORE_BIN=$(command -v weed)
    ANYSYNC_OBJECTSTORE_ARGS="mini -dir=$store_dir/data -ip=127.0.0.1 -ip.bind=0.0.0.0 \
-s3.port=$s3_port -s3.config=$store_dir/seaweedfs-s3.json -bucket=anysync \
-webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false"
    ANYSYNC_OBJECTSTORE_ENVIRONMENT=""
fi

ANYSYNC_VENV=/opt/anysync
ANYSYNC_RUN_DIR=$(mktemp -d)
ANYSYNC_LOG_DIR=$ANYSYNC_RUN_DIR
ANYSYNC_OBJECTSTORE_DIR=$store_dir
export ANYSYNC_VENV ANYSYNC_RUN_DIR ANYSYNC_LOG_DIR ANYSYNC_OBJECTSTORE_BIN \
    ANYSYNC_OBJECTSTORE_ARGS ANYSYNC_OBJECTSTORE_DIR ANYSYNC_OBJECTSTORE_ENVIRONMENT
exec supervisord --nodaemon -c /etc/anysync/supervisor/supervisord.conf
