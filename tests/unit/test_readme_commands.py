"""README's commands are the CLI's (issue #16): every `anysync` and `anysync-server` line
in README's shell blocks parses with the real parsers, with each `[optional part]` left
out and put in, and each `a | b` alternative on its own. The integration suite runs them;
this catches a README that names an option or command the code does not have."""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.cli import main as cli_main
from anysync.server import cli as server_cli

README = Path(__file__).resolve().parents[2] / "README.md"
# README's placeholders, as values the parsers' types take.
PLACEHOLDERS = {"N": "7", "HOST:PORT": "0.0.0.0:65065", "FILE": "out.bin"}


def readme_commands() -> list[str]:
    lines: list[str] = []
    in_sh = False
    for raw in README.read_text().splitlines():
        if raw.startswith("```"):
            in_sh = raw.strip() == "```sh"
            continue
        if in_sh:
            lines.append(raw)
    joined = "\n".join(lines).replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if re.match(r"\s*anysync(-server)? ", line)
    ]


def variants(line: str) -> Iterator[list[str]]:
    """The argv lists a README line stands for."""
    words = shlex.split(line, comments=True)
    if ">" in words:  # a redirection: not the command's
        words = words[: words.index(">")]
    text = " ".join(shlex.quote(w) if " " in w else w for w in words)
    prog = words[0]
    for alternative in text.split(" | "):
        alternative = alternative.strip()
        if not alternative.startswith(prog):
            alternative = f"{prog} {alternative}"
        pieces = re.split(r"\[([^\]]*)\]", alternative)  # outside, optional, outside, ...
        for keep in itertools.product((False, True), repeat=len(pieces) // 2):
            argv = "".join(
                piece if i % 2 == 0 else (piece if keep[i // 2] else "")
                for i, piece in enumerate(pieces)
            )
            yield [PLACEHOLDERS.get(w, w) for w in shlex.split(argv)]


def _parses(argv: list[str]) -> str | None:
    parser: argparse.ArgumentParser
    if argv[0] == "anysync":
        parser = cli_main.build_parser(argv[1:], complete=True)
    else:
        parser = server_cli._parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv[1:])
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1]
    return None


def test_readme_has_commands_to_check() -> None:
    assert len(readme_commands()) > 50


@pytest.mark.parametrize("line", readme_commands())
def test_a_readme_command_parses(line: str) -> None:
    wrong = {" ".join(argv): why for argv in variants(line) if (why := _parses(argv))}
    assert not wrong, wrong
