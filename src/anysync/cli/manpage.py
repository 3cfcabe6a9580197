"""Man pages of `anysync`, rendered from the same parser as --help and completion.

`python -m anysync.cli.manpage DIR` writes anysync.1 and one anysync-COMMAND.1 per
command (`make man`). The text is the parser's own: a help line changed in the code is
changed in the page, and tests/unit/test_manpages.py renders every page with groff.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anysync import __version__
from anysync.cli import main as cli_main

SECTION = "1"


def roff(text: str) -> str:
    """Plain text as roff: backslashes and leading dots or quotes escaped."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction) or a.help == argparse.SUPPRESS:
            continue
        names = ", ".join(a.option_strings) or str(a.metavar or a.dest)
        if a.option_strings and a.nargs != 0:
            names += " " + str(a.metavar or a.dest.upper())
        # As --help shows it: %(default)s filled in, %% as %.
        shown = parser._get_formatter()._expand_help(a) if a.help else ""
        out += [".TP", f"\\fB{roff(str(names))}\\fR", roff(shown)]
    return out


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for choice in a._choices_actions:
                out += [".TP", f"\\fB{roff(choice.dest)}\\fR", roff(choice.help or "")]
    return out


def page(name: str, parser: argparse.ArgumentParser, extra: str = "") -> str:
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines = [
        f'.TH "{name.upper()}" "{SECTION}" "" "anysync {__version__}" "AnySync"',
        ".SH NAME",
        f"{name} \\- {roff(parser.description or '')}",
        ".SH SYNOPSIS",
        ".nf",
        roff(usage),
        ".fi",
    ]
    commands = _commands(parser)
    if commands:
        lines += [".SH COMMANDS", *commands]
    lines += [".SH OPTIONS", *_options(parser)]
    for sub in _subparsers(parser):  # `sync add`, `devices revoke`, ...
        lines += [f".SS {roff(sub.prog)}", roff(sub.description or ""), *_options(sub)]
    if extra:
        lines += [".SH NOTES", ".nf", roff(extra), ".fi"]
    lines += [".SH SEE ALSO", "anysync(1), anysync-server(1); README.md and docs/ of AnySync"]
    return "\n".join(lines) + "\n"


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found: list[argparse.ArgumentParser] = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for child in a.choices.values():
                found += [child, *_subparsers(child)]
    return found


def pages() -> dict[str, str]:
    """File name → man page, for anysync and each of its commands."""
    top = cli_main.build_parser([], complete=True)
    out = {f"anysync.{SECTION}": _top_page(top)}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out[f"anysync-{name}.{SECTION}"] = page(f"anysync-{name}", child)
    return out


def _top_page(top: argparse.ArgumentParser) -> str:
    lines = page("anysync", top, top.epilog or "").splitlines()
    # The top page lists commands, not every command's options (their own pages do).
    end = next(i for i, line in enumerate(lines) if line.startswith(".SS "))
    rest = next(i for i, line in enumerate(lines) if line == ".SH NOTES")
    return "\n".join(lines[:end] + lines[rest:]) + "\n"


def main(argv: list[str]) -> int:
    where = Path(argv[0]) if argv else Path("man")
    where.mkdir(parents=True, exist_ok=True)
    for name, text in pages().items():
        (where / name).write_text(text)
    print(f"wrote {len(pages())} man pages into {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
