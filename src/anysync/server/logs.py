"""The server's log output: one line per record on standard output, text or JSON ([log]).

text: `2026-11-27T18:00:00Z INFO anysync.server.service: message`
json: `{"time": "2026-11-27T18:00:00Z", "level": "INFO", "logger": "…", "message": "…", …}`
      plus the record's `extra=` fields and, for an exception, its traceback.

Standard output because that is what supervisord, containers and journald collect.
Nothing the server logs is meant to be secret, but a redaction pass backs that up:
extra fields named like a credential, and the signature of a presigned URL, are
replaced before a line is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
REDACTED = "[redacted]"

# Whatever a LogRecord carries by itself; everything else came in through `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_SECRET_FIELD = re.compile(r"secret|password|passwd|token|authorization|credential", re.I)
# A presigned URL is a bearer credential until it expires: keep the URL, drop its proof
# (also in an Authorization header: "Credential=…, SignedHeaders=…, Signature=…").
_SECRET_TEXT = re.compile(r"((?:X-Amz-)?(?:Signature|Credential|Security-Token)=)[^&,\s\"']+", re.I)
# Their debug output is wire dumps (botocore's includes request headers): never below INFO.
_CHATTY = ("botocore", "boto3", "s3transfer", "urllib3")


def configure(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (standard output) as `fmt` ("text"|"json")."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(LEVELS[level], logging.INFO))


def redact(text: str) -> str:
    return _SECRET_TEXT.sub(rf"\1{REDACTED}", text)


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # ensure_ascii keeps every line one physical line whatever the message holds.
        return redact(json.dumps(out, default=str, ensure_ascii=True))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: REDACTED if _SECRET_FIELD.search(key) else value
        for key, value in vars(record).items()
        if key not in _RECORD_FIELDS and not key.startswith("_")
    }


def _text(value: object) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c in '"=' for c in text) else text
