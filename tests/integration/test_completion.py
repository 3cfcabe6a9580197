"""Shell completion (issue #16): `anysync completion bash` is sourced by a real bash and
completes commands, sub-commands and options of this version; zsh's is a compdef."""

from __future__ import annotations

import subprocess

from tests.integration.harness import BIN, CLIENT, base_env

BASH = """
source <(anysync completion bash)
ask() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        COMPREPLY=(); _shtab_anysync; echo "${COMPREPLY[*]}"; }
ask anysync sy
ask anysync sync re
ask anysync restore latest --ov
ask anysync backup --exclude-c
"""


def test_bash_completes_commands_subcommands_and_options() -> None:
    env = base_env() | {"PATH": f"{BIN}:{base_env().get('PATH', '')}"}
    out = subprocess.run(
        ["bash", "-c", BASH], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out == ["sync", "remove retention", "--overwrite", "--exclude-caches"]


def test_zsh_gets_a_compdef_and_a_bad_shell_is_a_usage_error() -> None:
    zsh = subprocess.run(
        [CLIENT, "completion", "zsh"], env=base_env(), capture_output=True, text=True, check=True
    ).stdout
    assert zsh.startswith("#compdef anysync") and "restore" in zsh and "--overwrite" in zsh
    fish = subprocess.run(
        [CLIENT, "completion", "fish"], env=base_env(), capture_output=True, text=True
    )
    assert fish.returncode == 2 and "bash" in fish.stderr
