"""`anysync --help` and every `anysync COMMAND --help` (issue #16): each command and
sub-command has a description, each option and argument a help text, the top-level help
names the environment a script needs, and its exit codes are README's."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from anysync.cli import main as cli_main

README = Path(__file__).resolve().parents[2] / "README.md"


def _parsers(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


@pytest.mark.parametrize("command", list(cli_main.COMMANDS))
def test_every_command_option_and_argument_is_explained(command: str) -> None:
    missing = []
    for path, parser in _parsers(cli_main.build_parser([command]), "anysync"):
        if path != "anysync" and not parser.description:
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_the_top_level_help_names_the_environment() -> None:
    text = cli_main.build_parser([]).format_help()
    for name in ("ANYSYNC_HOME", "ANYSYNC_PASSWORD", "--password-file"):
        assert name in text


def _exit_codes(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"(?<![\w.-])(\d{1,3}) [a-z]", text)}


def test_the_exit_codes_in_help_are_readmes() -> None:
    readme = README.read_text()
    para = readme[readme.index("Exit codes: 0 success") :].split("\n\n")[0]
    helped = cli_main.build_parser([]).epilog or ""
    helped = helped[helped.index("Exit codes:") :].split("\n\n")[0]
    assert _exit_codes(para) == _exit_codes(helped) == {*range(0, 14), 130, 141}


def test_every_json_output_has_its_schema_in_docs() -> None:
    """docs/json.md has a section for each command (and sub-command) with --json."""
    documented = (README.parent / "docs" / "json.md").read_text()
    with_json = []
    for command in cli_main.COMMANDS:
        for path, parser in _parsers(cli_main.build_parser([command]), "anysync"):
            if any("--json" in a.option_strings for a in parser._actions):
                with_json.append(path)
    missing = [p for p in with_json if f"## {p}" not in documented]
    assert len(with_json) > 15 and not missing, missing
