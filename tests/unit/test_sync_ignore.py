"""Ignore rules answer as pathspec's gitignore matching does, also through the joined
regex used when no pattern is negated (ignore.py, #15), and each path is matched once
per pass."""

from __future__ import annotations

import itertools

import pathspec
import pytest

from anysync.client.sync.ignore import DEFAULT_PATTERNS, IgnoreRules

PATTERNS = [
    "*.log", "/build", "out/", "docs/**/draft-*", "[Tt]emp*", "a/b/c.txt", "deep/*/x",
    "name with space", "*.o?", "ünï*",
]  # fmt: skip
NAMES = [
    "a.log", "build", "out", "draft-1", "Temp1", "temp", "c.txt", "x", "name with space",
    "p.ob", "ünïcode", "keep.txt", "4913", ".DS_Store", "f.swp", "x~", ".#lock",
]  # fmt: skip
DIRS = ["", "a/", "a/b/", "docs/", "docs/v1/", "deep/one/", "src/build/", "out/in/"]


def paths() -> list[tuple[bytes, bool]]:
    return [
        ((d + n).encode(), is_dir) for d, n, is_dir in itertools.product(DIRS, NAMES, (False, True))
    ]


@pytest.mark.parametrize("extra", [PATTERNS, [*PATTERNS, "!keep.txt", "!a.log"]])
def test_rules_match_as_gitignore_does(extra: list[str]) -> None:
    spec = pathspec.GitIgnoreSpec.from_lines(DEFAULT_PATTERNS + extra)
    rules = IgnoreRules(extra)
    for path, is_dir in paths():
        expected = spec.match_file(path.decode() + ("/" if is_dir else ""))
        assert rules.ignored(path, is_dir) == expected, (path, is_dir)
        assert rules.ignored(path, is_dir) == expected  # the kept answer


def test_without_negation_one_search_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = IgnoreRules(PATTERNS)
    calls = []
    monkeypatch.setattr(rules._spec, "match_file", lambda f: calls.append(f))
    assert rules.ignored(b"a/x.log", False)
    assert not rules.ignored(b"a/x.txt", False)
    assert calls == []  # pathspec's per-pattern loop is not run
