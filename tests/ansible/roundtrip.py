"""A client round trip from the host: sign up, back up, restore, compare."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import Client, make_tree, snapshot_of

# The deployed server is a real one: it refuses the weakened KDF of the other tests.
FULL_KDF = {"ANYSYNC_TESTONLY_WEAKEN_KDF": "0"}


def round_trip(tmp: Path, address: str, fingerprint: str, invite: str) -> Client:
    """Sign up with the invite, back up a tree, restore it elsewhere, compare."""
    source = tmp / "source"
    make_tree(source, small_files=40, big_mib=3)
    client = Client(tmp / "client")
    client.run(
        "signup", "--server", address, "--email", "owner@example.org",
        "--invite", invite, "--fingerprint", fingerprint, env=FULL_KDF,
    )  # fmt: skip
    client.run("backup", str(source), env=FULL_KDF)
    check_restore(client, source, tmp / "restored")
    return client


def check_restore(client: Client, source: Path, target: Path) -> None:
    client.run("restore", "latest", "--target", str(target), env=FULL_KDF)
    restored = next(p for p in [target / source.name, target] if (p / "big.bin").exists())
    assert snapshot_of(restored) == snapshot_of(source)
