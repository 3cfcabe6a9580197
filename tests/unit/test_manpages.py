"""Man pages (issue #16), rendered from the parser (anysync/cli/manpage.py): one per
command plus anysync(1), each rendered by man/groff without a warning, each naming every
option of its command; the committed man/ is what the code renders today."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from anysync.cli import main as cli_main
from anysync.cli import manpage

MAN = Path(__file__).resolve().parents[2] / "man"


def test_a_page_per_command_and_the_committed_pages_are_current() -> None:
    rendered = manpage.pages()
    assert set(rendered) == {"anysync.1"} | {f"anysync-{c}.1" for c in cli_main.COMMANDS}
    stale = [n for n, text in rendered.items() if (MAN / n).read_text() != text]
    assert not stale, f"man/ is stale ({stale}): run `make man` and commit it"
    assert sorted(p.name for p in MAN.iterdir()) == sorted(rendered)


@pytest.mark.parametrize("name", ["anysync.1", "anysync-restore.1", "anysync-sync.1"])
def test_pages_render_without_warnings_and_name_every_option(name: str) -> None:
    proc = subprocess.run(
        ["man", "--warnings", "-l", str(MAN / name)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""},
    )  # fmt: skip
    assert proc.stderr == "", proc.stderr
    if name == "anysync.1":
        assert "ANYSYNC_HOME" in proc.stdout and "141" in proc.stdout
    else:
        command = name.removeprefix("anysync-").removesuffix(".1")
        parser = cli_main.build_parser([command], complete=True)
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        for action in sub._actions:
            for option in action.option_strings:
                assert option in proc.stdout, option
