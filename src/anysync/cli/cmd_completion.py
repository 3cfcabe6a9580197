"""anysync completion: a shell completion script, generated from the parser itself (so
it knows every command, sub-command and option of this version).

  bash:  anysync completion bash > ~/.local/share/bash-completion/completions/anysync
  zsh:   anysync completion zsh > ~/.zfunc/_anysync   (with fpath+=~/.zfunc before compinit)
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete for")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import shtab

    from anysync.cli.main import build_parser

    parser = build_parser([], complete=True)
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0
