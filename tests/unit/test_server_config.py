"""server.toml: the template parses to the defaults; anything unknown or mistyped is refused."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from anysync.errors import UsageError
from anysync.server.config import TEMPLATE, ServerConfig, format_size, parse_config, parse_size


def _config(**changes: Any) -> dict[str, Any]:
    data = tomllib.loads(TEMPLATE)
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition("__")
        (data.setdefault(section, {}) if section else data)[key] = value
    return data


def test_the_template_is_the_defaults() -> None:
    assert parse_config(tomllib.loads(TEMPLATE)) == ServerConfig()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"registraton": "closed"}, "unknown setting 'registraton'"),
        ({"storage__bucketname": "x"}, "unknown setting 'bucketname' in \\[storage\\]"),
        ({"extra__x": 1}, "unknown setting 'extra'"),
        ({"registration": "maybe"}, "registration"),
        ({"version": 2}, "unsupported config version"),
        ({"listen": "nohost"}, "not HOST:PORT"),
        ({"limits__max_failed_logins": "5"}, "wrong type"),
        ({"limits__max_failed_logins": 0}, "at least 1"),
        ({"storage__kind": "s3"}, "needs endpoint, bucket, access_key"),
        ({"storage__kind": "ftp"}, 'expected "local" or "s3"'),
        ({"log__format": "xml"}, "expected text or json"),
        ({"storage__default_quota": "lots"}, "not a size"),
        ({"gc__grace": "24"}, "\\[gc\\] grace: not a duration"),
        ({"gc__grace": "1w"}, "not a duration"),
        ({"gc__reap_every": "0s"}, "at least 1s"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_config(_config(**changes))


def test_settings_are_read() -> None:
    config = parse_config(
        _config(registration="open", storage__default_quota="10G", listen="[::]:1234")
    )
    assert (config.registration, config.default_quota, config.listen) == (
        "open",
        10 << 30,
        "[::]:1234",
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("500M", 500 << 20), ("10G", 10 << 30), ("10 GiB", 10 << 30), ("1k", 1024), (7, 7)],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "10X", "G"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 3 << 30)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "3.0 GiB",
    ]


def test_boolean_settings_are_accepted_and_checked() -> None:
    s3 = {
        "kind": "s3",
        "endpoint": "http://127.0.0.1:65064",
        "bucket": "anysync",
        "access_key": "k",
        "secret_key_file": "s3.secret",
    }
    config = parse_config({"version": 1, "storage": {**s3, "direct": False}})
    assert config.s3 is not None and config.s3.direct is False
    with pytest.raises(UsageError, match="wrong type"):
        parse_config({"version": 1, "storage": {**s3, "direct": "no"}})
    with pytest.raises(UsageError, match="wrong type"):
        parse_config({"version": 1, "limits": {"max_failed_logins": True}})


def test_gc_settings_are_read() -> None:
    config = parse_config(
        _config(
            gc__grace="0s",
            gc__min_pack_age="90s",
            gc__reap_every="2m",
            gc__elevation="1h",
            gc__maintenance_headroom="1M",
        )
    )
    assert (
        config.gc_grace_seconds,
        config.gc_min_pack_age_seconds,
        config.gc_reap_every_seconds,
        config.gc_elevation_seconds,
        config.gc_maintenance_headroom,
    ) == (0, 90, 120, 3600, 1 << 20)
    defaults = ServerConfig()
    assert (defaults.gc_grace_seconds, defaults.gc_min_pack_age_seconds) == (86400, 3600)
