"""Which paths sync: `.anysyncignore` (gitignore syntax) plus defaults for editor files.

The `.anysyncignore` file itself syncs, so every device ignores the same things.
"""

from __future__ import annotations

import os
from pathlib import Path

import pathspec

IGNORE_FILE = ".anysyncignore"

# Temporary and lock files of common editors and systems, and our own temp files.
DEFAULT_PATTERNS = [
    ".anysync-tmp-*",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "4913",  # vim's write test
    ".~lock.*#",  # LibreOffice
    "~$*",  # Microsoft Office
    "*.tmp",
    ".goutputstream-*",  # GTK
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".Trash-*/",
]


class IgnoreRules:
    def __init__(self, patterns: list[str]) -> None:
        self._spec = pathspec.GitIgnoreSpec.from_lines(DEFAULT_PATTERNS + patterns)

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        try:
            text = (root / IGNORE_FILE).read_text("utf-8", errors="replace")
        except OSError:
            text = ""
        return cls(text.splitlines())

    def ignored(self, path: bytes, is_dir: bool) -> bool:
        text = os.fsdecode(path) + ("/" if is_dir else "")
        return self._spec.match_file(text)
