"""deploy/firewall: exactly the two AnySync ports, and valid nftables syntax."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

FIREWALL = Path(__file__).resolve().parents[2] / "deploy" / "firewall"


def test_only_the_two_ports_are_opened() -> None:
    for name in ("anysync.nft", "anysync-ports.nft"):
        rules = [
            line.split("#")[0]
            for line in (FIREWALL / name).read_text().splitlines()
            if "dport" in line.split("#")[0]
        ]
        ports = {p for rule in rules for p in re.findall(r"\b\d+\b", rule)}
        expected = {"65064", "65065", "22"} if name == "anysync.nft" else {"65064", "65065"}
        assert ports == expected, (name, rules)


def _nft_check(path: Path) -> subprocess.CompletedProcess[str]:
    """`nft --check -f PATH`. nft needs CAP_NET_ADMIN even to check; a non-root user gets
    it in a new user and network namespace (`unshare -rn`)."""
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    assert nft, "nft (nftables) is not installed: run `make deps` as root"
    prefix = [] if os.geteuid() == 0 else ["unshare", "-rn"]
    return subprocess.run(
        [*prefix, nft, "--check", "-f", str(path)], capture_output=True, text=True, timeout=60
    )


def test_nftables_accepts_the_files(tmp_path: Path) -> None:
    check = _nft_check(FIREWALL / "anysync.nft")
    if "Operation not permitted" in check.stderr and os.geteuid() != 0:
        pytest.skip("nft --check needs CAP_NET_ADMIN, and user namespaces are not available")
    assert check.returncode == 0, check.stderr
    # The single rule, included into someone else's default-drop chain.
    host = tmp_path / "host.nft"
    host.write_text(
        "table inet host {\n  chain input {\n"
        "    type filter hook input priority filter; policy drop;\n"
        f'    include "{FIREWALL / "anysync-ports.nft"}"\n  }}\n}}\n'
    )
    check = _nft_check(host)
    assert check.returncode == 0, check.stderr
