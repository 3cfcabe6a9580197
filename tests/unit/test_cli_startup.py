"""What `anysync` imports to start (issue #15: command start).

Only the module of the command being run is imported (anysync.cli.main, COMMANDS), and
a listing command does not import what only transfers, syncs or makes certificates
need. Checked in a fresh interpreter, by the modules it ends up with; no timing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from anysync.cli import main as cli_main

# What no command start needs: the wire, the crypto libraries, the local state.
HEAVY = ("grpc", "google.protobuf", "cryptography", "nacl", "zstandard", "sqlite3")
# What `anysync snapshots` does not need: the sync engine and drive, the chunker, the
# object store's HTTP path (presigned URLs), certificate parsing.
NOT_FOR_LISTING = (
    "anysync.client.sync",
    "anysync.client.drive",
    "anysync.client.backup",
    "anysync.client.restore",
    "anysync.store",
    "pathspec",
    "watchdog",
    "pyfastcdc",
    "http.client",
    "cryptography.x509",
    "minio",
    "boto3",
)


def modules_after(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter imports to build the parser for `argv` (those
    it had before, such as a coverage tracer's, left out)."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "from anysync.cli import main\n"
        f"main.build_parser({argv!r}).format_help()\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout))


def under(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_help_imports_no_command() -> None:
    modules = modules_after(["--help"])
    assert under(modules, HEAVY) == []
    assert sorted(m for m in modules if m.startswith("anysync.cli.cmd_")) == []
    assert under(modules, ("anysync.client",)) == []


@pytest.mark.parametrize("argv", [["--help"], ["--help", "pin"]])
def test_help_lists_every_command_with_its_line(argv: list[str]) -> None:
    text = cli_main.build_parser(argv).format_help()
    for name, (_, help_line) in cli_main.COMMANDS.items():
        assert f"    {name}" in text and help_line in " ".join(text.split()), name


def test_a_command_imports_its_own_module_only() -> None:
    modules = modules_after(["-v", "snapshots", "--json"])
    commands = sorted(m for m in modules if m.startswith("anysync.cli.cmd_"))
    assert commands == ["anysync.cli.cmd_snapshots"]
    assert under(modules, NOT_FOR_LISTING) == []


def test_the_run_command_is_found_after_global_options() -> None:
    from anysync.cli import cmd_snapshots

    args = cli_main.build_parser(["-v", "snapshots", "--json"]).parse_args(
        ["-v", "snapshots", "--json"]
    )
    assert args.run is cmd_snapshots.run and args.json and args.verbose
    assert cli_main.command_in(["--version"]) is None


@pytest.mark.parametrize("module", sorted({m for m, _ in cli_main.COMMANDS.values()}))
def test_each_module_registers_the_commands_the_table_gives_it(module: str) -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"anysync.cli.{module}").register(sub)
    registered = {action.dest: action.help for action in sub._choices_actions}
    assert set(sub.choices) == set(registered)
    assert registered == {n: h for n, (m, h) in cli_main.COMMANDS.items() if m == module}


@pytest.mark.parametrize("name", list(cli_main.COMMANDS))
def test_every_command_has_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main.build_parser([name, "--help"]).parse_args([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: anysync {name} ")


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main.main(["snapshot"])
    assert exit_.value.code == 2
    assert "invalid choice: 'snapshot'" in capsys.readouterr().err
