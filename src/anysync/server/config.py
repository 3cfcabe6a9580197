"""server.toml: the template written by `init`, and a strict parser for it.

Unknown keys are errors, not warnings: a misspelt `registraton = "closed"` must not
leave a server open to sign-ups.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anysync.errors import UsageError
from anysync.store.base import S3Settings

CONFIG_VERSION = 1
REGISTRATION_MODES = ("open", "invite", "closed")

TEMPLATE = """\
# AnySync server configuration. Restart the server after editing.
# Sizes are bytes or a number with a unit: K, M, G, T (powers of 1024), e.g. "500M".

# Format of this file; the server refuses versions it does not know.
version = 1

# Address and port of the gRPC listener (always TLS). 0.0.0.0 = every IPv4 address.
listen = "0.0.0.0:65065"

# Who may create an account:
#   "open"   anyone who can reach the server,
#   "invite" only with a one-time code from `anysync-server invite create`,
#   "closed" nobody.
registration = "invite"

[storage]
# Where encrypted packs are stored: "local" (a directory) or "s3" (MinIO, SeaweedFS,
# Garage, AWS S3 or any S3-compatible server).
kind = "local"
# local: the directory; a relative path is relative to this home.
path = "objects"
# Quota of accounts without a quota of their own ("anysync-server user quota"); "0" = unlimited.
default_quota = "0"
# s3: where the server reaches the object store, and the bucket (created if missing).
# endpoint = "http://127.0.0.1:65064"
# bucket = "anysync"
# region = "us-east-1"
# access_key = "anysync"
# The secret key: from this file (relative to this home, mode 0600) or this environment
# variable; never written here.
# secret_key_file = "s3.secret"
# secret_key_env = "ANYSYNC_S3_SECRET_KEY"
# Extra CA certificate (PEM) for an https endpoint with a private CA.
# ca_file = ""
# Clients move packs to and from the store directly through presigned URLs (true), or
# stream them through this server (false).
# direct = true
# The store's address as clients see it, when it differs from `endpoint`
# (e.g. "http://myserver.lan:65064"); presigned URLs are made for this address.
# public_endpoint = ""
# How long a presigned URL stays valid, in seconds.
# presign_seconds = 900

[metrics]
# Prometheus metrics at http://LISTEN/metrics; "" turns them off. Loopback by default.
listen = "127.0.0.1:9465"

[log]
# "text" for people, "json" for log collectors; both go to standard output.
format = "text"
level = "info"

[limits]
# Failed logins of one e-mail from one client address before each further attempt
# there waits (30 s, doubling up to 15 min). A correct password from an address that
# has not failed always works; the counts survive a restart (docs/design.md).
max_failed_logins = 5

[gc]
# Durations are a number with a unit: s, m, h, d (e.g. "90s", "24h"); "0s" = none.
# How long condemned packs (prune) stay before they are deleted: the time to undo a
# prune and for reads in flight to finish. Safety does not depend on it.
grace = "24h"
# Packs younger than this are never condemned (uploads of a backup still running).
min_pack_age = "1h"
# How often condemned packs past their grace period are deleted.
reap_every = "10m"
# How long a device acts with the manage right after a password proof (Elevate).
elevation = "15m"
# How far a manage device's maintenance uploads (forget, repack) may pass the quota.
maintenance_headroom = "64M"

[scrub]
# How often the server compares the object store with its records (it only reports:
# packs missing from the store, objects no pack refers to); "0s" = never
# (`anysync-server scrub` runs one by hand).
every = "24h"
# Objects without a pack are reported once the scrub has known them this long (uploads
# under way are such objects for a moment).
orphan_age = "24h"
"""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "0.0.0.0:65065"
    registration: str = "invite"
    storage_kind: str = "local"
    storage_path: str = "objects"
    default_quota: int = 0  # bytes, 0 = unlimited
    max_failed_logins: int = 5
    # Read from the server.toml of older versions; the login limiter no longer uses it.
    failed_login_window_seconds: int = 300
    s3: S3Settings | None = None
    metrics_listen: str = "127.0.0.1:9465"
    log_format: str = "text"
    log_level: str = "info"
    gc_grace_seconds: int = 24 * 3600
    gc_min_pack_age_seconds: int = 3600
    gc_reap_every_seconds: int = 600
    gc_elevation_seconds: int = 900
    gc_maintenance_headroom: int = 64 << 20  # bytes
    scrub_every_seconds: int = 24 * 3600  # 0 = no scheduled scrub
    scrub_orphan_age_seconds: int = 24 * 3600


# The whitelist: section → key → expected type. "" is the top level.
_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "": {"version": int, "listen": str, "registration": str},
    "storage": {
        "kind": str,
        "path": str,
        "default_quota": (str, int),
        "endpoint": str,
        "bucket": str,
        "region": str,
        "access_key": str,
        "secret_key_file": str,
        "secret_key_env": str,
        "ca_file": str,
        "direct": bool,
        "public_endpoint": str,
        "presign_seconds": int,
    },
    "limits": {"max_failed_logins": int, "failed_login_window_seconds": int},
    "metrics": {"listen": str},
    "log": {"format": str, "level": str},
    "gc": {
        "grace": str,
        "min_pack_age": str,
        "reap_every": str,
        "elevation": str,
        "maintenance_headroom": (str, int),
    },
    "scrub": {"every": str, "orphan_age": str},
}
_S3_KEYS = ("endpoint", "bucket", "access_key")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int) -> int:
    """'10G' → 10 GiB in bytes; accepts 'K'/'KB'/'KiB' etc., any case, and plain integers."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = text, ""
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
        if not m:
            raise UsageError(f"not a size: {text!r} (expected e.g. 500M, 10G or 0)")
        value, unit = int(m.group(1)), m.group(2).upper()
    if value < 0:
        raise UsageError(f"not a size: {text!r} (negative)")
    return value * _UNITS[unit]


def parse_duration(text: str) -> int:
    """'24h' → 86400 seconds; units s, m, h, d; '0s' (or '0') = none."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text, re.IGNORECASE)
    if not m or (not m.group(2) and m.group(1) != "0"):
        raise UsageError(f"not a duration: {text!r} (expected e.g. 90s, 10m, 24h or 0s)")
    return int(m.group(1)) * _DURATION_UNITS[m.group(2).lower() or "s"]


def format_size(n: int) -> str:
    """Bytes for people: '1.5 GiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def load_config(path: Path) -> ServerConfig:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; run `anysync-server init`") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: {err}") from None
    try:
        return parse_config(data)
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None


def parse_config(data: dict[str, Any]) -> ServerConfig:
    """Validate the parsed TOML against the whitelist and return typed settings."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SCHEMA and key != "":
            if not isinstance(value, dict):
                raise UsageError(f"[{key}] must be a table")
            for sub, subvalue in value.items():
                flat[_checked(key, sub, subvalue)] = subvalue
        else:
            flat[_checked("", key, value)] = value

    version = flat.get("version")
    if version != CONFIG_VERSION:
        raise UsageError(f"unsupported config version {version!r} (this server reads 1)")
    defaults = ServerConfig()
    config = ServerConfig(
        listen=flat.get("listen", defaults.listen),
        registration=flat.get("registration", defaults.registration),
        storage_kind=flat.get("storage.kind", defaults.storage_kind),
        storage_path=flat.get("storage.path", defaults.storage_path),
        default_quota=parse_size(flat.get("storage.default_quota", 0)),
        max_failed_logins=flat.get("limits.max_failed_logins", defaults.max_failed_logins),
        failed_login_window_seconds=flat.get(
            "limits.failed_login_window_seconds", defaults.failed_login_window_seconds
        ),
        s3=_s3_settings(flat),
        metrics_listen=flat.get("metrics.listen", defaults.metrics_listen),
        log_format=flat.get("log.format", defaults.log_format),
        log_level=flat.get("log.level", defaults.log_level),
        gc_grace_seconds=_duration(flat, "gc.grace", defaults.gc_grace_seconds),
        gc_min_pack_age_seconds=_duration(
            flat, "gc.min_pack_age", defaults.gc_min_pack_age_seconds
        ),
        gc_reap_every_seconds=_duration(flat, "gc.reap_every", defaults.gc_reap_every_seconds),
        gc_elevation_seconds=_duration(flat, "gc.elevation", defaults.gc_elevation_seconds),
        gc_maintenance_headroom=parse_size(
            flat.get("gc.maintenance_headroom", defaults.gc_maintenance_headroom)
        ),
        scrub_every_seconds=_duration(flat, "scrub.every", defaults.scrub_every_seconds),
        scrub_orphan_age_seconds=_duration(
            flat, "scrub.orphan_age", defaults.scrub_orphan_age_seconds
        ),
    )
    parse_listen(config.listen)
    if config.registration not in REGISTRATION_MODES:
        raise UsageError(
            f"registration = {config.registration!r}: expected one of "
            + ", ".join(f'"{m}"' for m in REGISTRATION_MODES)
        )
    if config.storage_kind not in ("local", "s3"):
        raise UsageError(f'[storage] kind = {config.storage_kind!r}: expected "local" or "s3"')
    if config.metrics_listen:
        parse_listen(config.metrics_listen)
    if config.log_format not in LOG_FORMATS:
        raise UsageError(f"[log] format = {config.log_format!r}: expected text or json")
    if config.log_level not in LOG_LEVELS:
        raise UsageError(f"[log] level = {config.log_level!r}: expected one of {LOG_LEVELS}")
    if config.gc_reap_every_seconds < 1:
        raise UsageError("[gc] reap_every must be at least 1s")
    if config.max_failed_logins < 1 or config.failed_login_window_seconds < 1:
        raise UsageError("[limits] values must be at least 1")
    return config


def _duration(flat: dict[str, Any], name: str, default: int) -> int:
    if name not in flat:
        return default
    try:
        return parse_duration(flat[name])
    except UsageError as err:
        section, _, key = name.partition(".")
        raise UsageError(f"[{section}] {key}: {err}") from None


def _s3_settings(flat: dict[str, Any]) -> S3Settings | None:
    if flat.get("storage.kind", "local") != "s3":
        return None
    missing = [k for k in _S3_KEYS if not flat.get(f"storage.{k}")]
    if missing:
        raise UsageError(f'[storage] kind = "s3" needs {", ".join(missing)}')
    if not flat.get("storage.secret_key_file") and not flat.get("storage.secret_key_env"):
        raise UsageError('[storage] kind = "s3" needs secret_key_file or secret_key_env')
    endpoint = flat["storage.endpoint"]
    if not re.match(r"https?://[^/]+/?$", endpoint):
        raise UsageError(f"[storage] endpoint {endpoint!r} is not like http://HOST:PORT")
    seconds = flat.get("storage.presign_seconds", 900)
    if not 60 <= seconds <= 7 * 24 * 3600:
        raise UsageError("[storage] presign_seconds must be between 60 and 604800")
    return S3Settings(
        endpoint=endpoint.rstrip("/"),
        bucket=flat["storage.bucket"],
        access_key=flat["storage.access_key"],
        region=flat.get("storage.region", "us-east-1"),
        secret_key_file=flat.get("storage.secret_key_file", ""),
        secret_key_env=flat.get("storage.secret_key_env", ""),
        ca_file=flat.get("storage.ca_file", ""),
        direct=flat.get("storage.direct", True),
        public_endpoint=flat.get("storage.public_endpoint", "").rstrip("/"),
        presign_seconds=seconds,
    )


def _checked(section: str, key: str, value: object) -> str:
    name = f"{section}.{key}" if section else key
    expected = _SCHEMA.get(section, {}).get(key)
    if expected is None:
        where = f"[{section}]" if section else "the top level"
        known = ", ".join(k for k in _SCHEMA[section] if k) if section in _SCHEMA else ""
        hint = f" (known keys: {known})" if known else ""
        raise UsageError(f"unknown setting {key!r} in {where}{hint}")
    if (isinstance(value, bool) and expected is not bool) or not isinstance(value, expected):
        raise UsageError(f"{name} has the wrong type: {value!r}")
    return name


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' → (host, port); port 0 means any free port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"listen address {listen!r} is not HOST:PORT")
    return host, int(port)
