"""Which paths sync: `.anysyncignore` (gitignore syntax) plus defaults for editor files.

The `.anysyncignore` file itself syncs, so every device ignores the same things.
"""

from __future__ import annotations

import os
import re
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
        # A pass asks about every path twice (its scan, then its plan), and matching a
        # path against every pattern is the dearest step of a scan: answers are kept.
        self._seen: dict[tuple[bytes, bool], bool] = {}
        self._any = _one_regex(self._spec)

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        try:
            text = (root / IGNORE_FILE).read_text("utf-8", errors="replace")
        except OSError:
            text = ""
        return cls(text.splitlines())

    def ignored(self, path: bytes, is_dir: bool) -> bool:
        key = (path, is_dir)
        found = self._seen.get(key)
        if found is None:
            text = os.fsdecode(path) + ("/" if is_dir else "")
            if self._any is not None:
                found = self._any.search(text) is not None
            else:
                found = self._spec.match_file(text)
            self._seen[key] = found
        return found


def _one_regex(spec: pathspec.GitIgnoreSpec) -> re.Pattern[str] | None:
    """Without a negated pattern (`!…`), a path is ignored if any pattern matches it: one
    search of the patterns joined, instead of one per pattern (a scan asks for every
    path). None when there is a negation, where order and precedence count."""
    regexes = []
    for p in spec.patterns:
        if p.include is False:
            return None
        if p.include is not None and isinstance(p, pathspec.RegexPattern) and p.regex:
            # The named group only ranks matches against negations: none here.
            regexes.append(p.regex.pattern.replace("(?P<ps_d>", "("))
    try:
        return re.compile("|".join(f"(?:{r})" for r in regexes) or "(?!)")
    except re.error:
        return None
