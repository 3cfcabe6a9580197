"""Apply ANYSYNC_* environment variables to the server home's server.toml.

Run by entrypoint.sh at every start, so that a changed variable takes effect on the
next restart. A server.toml mounted at $ANYSYNC_CONFIG_FILE (default
/config/server.toml) replaces the home's copy first; the variables override it.
Settings the variables do not name are left as they are. Secrets are never written
here: the file names the secret's file (ANYSYNC_S3_SECRET_KEY_FILE) or variable.

Exit status 2, with a message, when a value is invalid: the container stops at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

from anysync.errors import UsageError
from anysync.server.config import load_config

# Variable → (section, key, type). Section "" is the top level.
SETTINGS: dict[str, tuple[str, str, type]] = {
    "ANYSYNC_REGISTRATION": ("", "registration", str),
    "ANYSYNC_DEFAULT_QUOTA": ("storage", "default_quota", str),
    "ANYSYNC_S3_ENDPOINT": ("storage", "endpoint", str),
    "ANYSYNC_S3_BUCKET": ("storage", "bucket", str),
    "ANYSYNC_S3_REGION": ("storage", "region", str),
    "ANYSYNC_S3_ACCESS_KEY": ("storage", "access_key", str),
    "ANYSYNC_S3_SECRET_KEY_FILE": ("storage", "secret_key_file", str),
    "ANYSYNC_S3_PUBLIC_ENDPOINT": ("storage", "public_endpoint", str),
    "ANYSYNC_S3_DIRECT": ("storage", "direct", bool),
    "ANYSYNC_METRICS_LISTEN": ("metrics", "listen", str),
    "ANYSYNC_LOG_FORMAT": ("log", "format", str),
    "ANYSYNC_LOG_LEVEL": ("log", "level", str),
}


def main() -> int:
    try:
        configure(Path(os.environ.get("ANYSYNC_SERVER_HOME", "/data")), os.environ)
    except UsageError as err:
        print(f"anysync: configuration error: {err}", file=sys.stderr)
        return 2
    return 0


def configure(home: Path, env: Mapping[str, str]) -> None:
    config = home / "server.toml"
    mounted = Path(env.get("ANYSYNC_CONFIG_FILE", "/config/server.toml"))
    if mounted.is_file():
        shutil.copyfile(mounted, config)
        print(f"configuration: {mounted} (copied to {config})")

    text = config.read_text()
    if env.get("ANYSYNC_S3_ENDPOINT"):
        if storage_kind(text) == "local" and stores_packs(home / "objects"):
            raise UsageError(
                f"{home} keeps its packs on the local disk ({home}/objects); switching it to "
                "the S3 store would hide them. Unset ANYSYNC_S3_ENDPOINT, or use a new volume."
            )
        text = set_key(text, "storage", "kind", "s3")
    if env.get("ANYSYNC_S3_SECRET_KEY"):
        # The server reads the secret from its own environment, not from the file.
        text = set_key(text, "storage", "secret_key_env", "ANYSYNC_S3_SECRET_KEY")
    for name, (section, key, kind) in SETTINGS.items():
        raw = env.get(name, "")
        if raw == "":  # unset or empty: leave the setting as it is
            continue
        value: str | bool = raw
        if kind is bool:
            if raw.lower() not in ("true", "false"):
                raise UsageError(f"{name}={raw!r}: expected true or false")
            value = raw.lower() == "true"
        text = set_key(text, section, key, value)

    # The server's own checks, before anything starts; the old file stays until they pass.
    tmp = config.with_name(config.name + ".new")
    tmp.write_text(text)
    tmp.chmod(0o600)
    try:
        load_config(tmp)
    except UsageError as err:
        tmp.unlink()
        raise UsageError(str(err).replace(str(tmp), str(config))) from None
    tmp.replace(config)


def storage_kind(text: str) -> str:
    try:
        return str(tomllib.loads(text).get("storage", {}).get("kind", "local"))
    except tomllib.TOMLDecodeError:
        return "local"


def stores_packs(objects: Path) -> bool:
    return objects.is_dir() and any(p.is_file() for p in objects.rglob("*"))


def set_key(text: str, section: str, key: str, value: str | bool) -> str:
    """Set `key = value` in [section]: replace the setting, or its commented-out
    example from the template, or add it under the section header."""
    rendered = f"{key} = {toml_value(value)}"
    lines = text.splitlines()
    start, end = section_bounds(lines, section)
    setting = re.compile(rf"^\s*{re.escape(key)}\s*=")
    example = re.compile(rf"^\s*#\s*{re.escape(key)}\s*=")
    for pattern in (setting, example):
        for i in range(start, end):
            if pattern.match(lines[i]):
                lines[i] = rendered
                return "\n".join(lines) + "\n"
    lines.insert(start, rendered)
    return "\n".join(lines) + "\n"


def section_bounds(lines: list[str], section: str) -> tuple[int, int]:
    """Line range [start, end) of a section's body; the section is added if missing."""
    headers = [i for i, line in enumerate(lines) if re.match(r"^\s*\[", line)]
    if section == "":
        return 0, headers[0] if headers else len(lines)
    for i in headers:
        if lines[i].strip() == f"[{section}]":
            following = [h for h in headers if h > i]
            return i + 1, following[0] if following else len(lines)
    lines.extend(["", f"[{section}]"])
    return len(lines), len(lines)


def toml_value(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string


if __name__ == "__main__":
    sys.exit(main())
