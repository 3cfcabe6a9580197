"""Restored data must equal the source: same entries, same bytes, same link targets."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class VerifyError(Exception):
    """A tool restored something other than what was backed up."""


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest(root: Path) -> dict[str, str]:
    """relative path -> "dir", "link:<target>" or "file:<sha256>" for everything under root."""
    out: dict[str, str] = {}

    def walk(d: Path, rel: str) -> None:
        with os.scandir(d) as it:
            for e in it:
                r = f"{rel}/{e.name}" if rel else e.name
                if e.is_symlink():
                    out[r] = "link:" + os.readlink(e.path)
                elif e.is_dir():
                    out[r] = "dir"
                    walk(Path(e.path), r)
                else:
                    out[r] = "file:" + file_digest(Path(e.path))

    walk(root, "")
    return out


def compare(expected: dict[str, str], restored_root: Path, what: str) -> int:
    """Raise VerifyError unless restored_root matches `expected`; returns the entry count."""
    if not restored_root.is_dir():
        raise VerifyError(f"{what}: {restored_root} was not restored")
    got = manifest(restored_root)
    if got != expected:
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:5]
        raise VerifyError(f"{what}: missing {missing}, unexpected {extra}, different {wrong}")
    return len(got)


def compare_file(source: Path, restored: Path, what: str) -> None:
    if not restored.is_file() or file_digest(source) != file_digest(restored):
        raise VerifyError(f"{what}: {restored} is missing or differs from {source}")
