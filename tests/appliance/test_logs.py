"""server/logs.py: text and JSON lines on a stream, extra fields, redaction."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from anysync.server import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {
        name: logging.getLogger(name).level
        for name in ("botocore", "boto3", "s3transfer", "urllib3")
    }
    stream = io.StringIO()
    yield stream
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_text_lines(captured: io.StringIO) -> None:
    logs.configure("text", "info", captured)
    log = logging.getLogger("anysync.server.service")
    log.debug("not shown at info")
    log.info("pack %s stored", "ab12", extra={"bytes": 42, "note": "two words"})
    line = captured.getvalue()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO anysync\.server\.service: pack ab12 stored"
        r' bytes=42 note="two words"\n',
        line,
    ), line


def test_json_lines_parse(captured: io.StringIO) -> None:
    logs.configure("json", "debug", captured)
    log = logging.getLogger("anysync.test")
    log.debug("first\nwith a newline")
    log.warning("account %s", "u1", extra={"user": "u1", "size": 7})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = captured.getvalue().splitlines()
    assert len(lines) == 3  # one physical line per record, whatever the message holds
    records = [json.loads(line) for line in lines]
    assert records[0]["message"] == "first\nwith a newline"
    assert records[0]["level"] == "DEBUG"
    second = records[1]
    assert {k: second[k] for k in ("level", "logger", "message", "user", "size")} == {
        "level": "WARNING",
        "logger": "anysync.test",
        "message": "account u1",
        "user": "u1",
        "size": 7,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", second["time"])
    assert "ValueError: boom" in records[2]["exception"]


def test_secrets_are_redacted(captured: io.StringIO) -> None:
    logs.configure("json", "debug", captured)
    url = (
        "http://s3:65064/anysync/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=anysync%2F20261127%2Fus-east-1&X-Amz-Signature=0badc0ffee"
    )
    logging.getLogger("anysync.test").info(
        "presigned %s", url, extra={"secret_key": "hunter2", "access_token": "t0k3n"}
    )
    logging.getLogger("botocore.endpoint").info(
        "Authorization: AWS4-HMAC-SHA256 Credential=anysync/20261127/us-east-1/s3/aws4_request,"
        " SignedHeaders=host, Signature=5ca1ab1e"
    )
    logging.getLogger("botocore.endpoint").debug("wire dump")  # capped at INFO
    text = captured.getvalue()
    for secret in ("0badc0ffee", "hunter2", "t0k3n", "20261127", "5ca1ab1e", "wire dump"):
        assert secret not in text
    text = text.splitlines()[0]
    record = json.loads(text)
    assert record["secret_key"] == logs.REDACTED
    assert "X-Amz-Signature=[redacted]" in record["message"]
    assert record["message"].startswith("presigned http://s3:65064/anysync/k?")
