"""What a user types reaches the command as meant (issue #16): server addresses in the
forms people copy from elsewhere, device names, and -v on either side of the command."""

from __future__ import annotations

import argparse

import pytest

from anysync.cli import main as cli_main
from anysync.cli.common import device_name, server_address


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("pi.local", "pi.local:65065"),
        ("pi.local:7000", "pi.local:7000"),
        (" 192.168.1.20:65065 ", "192.168.1.20:65065"),
        ("https://pi.local", "pi.local:65065"),
        ("https://pi.local:7000/", "pi.local:7000"),
        ("HTTPS://pi.local:7000", "pi.local:7000"),
        ("[::1]", "[::1]:65065"),
        ("[::1]:7000", "[::1]:7000"),
        ("https://[fe80::1]:7000", "[fe80::1]:7000"),
        ("pi.local:07000", "pi.local:7000"),
    ],
)
def test_server_address_forms(typed: str, meant: str) -> None:
    assert server_address(typed) == meant


@pytest.mark.parametrize(
    ("typed", "hint"),
    [
        ("http://pi.local:65065", "TLS only"),
        ("ftp://pi.local", "TLS only"),
        ("https://pi.local:65065/anysync", "without a path"),
        ("::1", "brackets"),
        ("fe80::1:7000", "brackets"),
        ("pi.local:0", "HOST:PORT"),
        ("pi.local:65536", "HOST:PORT"),
        ("pi.local:port", "HOST:PORT"),
        (":65065", "HOST:PORT"),
        ("pi local:65065", "HOST:PORT"),
        ("[::1]x7000", "HOST:PORT"),
        ("[]:7000", "HOST:PORT"),
    ],
)
def test_bad_server_addresses_say_which_form_to_use(typed: str, hint: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=hint):
        server_address(typed)


def test_device_names_are_trimmed_and_checked() -> None:
    assert device_name("  laptop  ") == "laptop"
    for bad in ("", "   ", "x" * 65, "evil\x1b[2Jname"):
        with pytest.raises(argparse.ArgumentTypeError):
            device_name(bad)


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["snapshots"], False),
        (["-v", "snapshots"], True),
        (["snapshots", "-v"], True),
        (["snapshots", "--verbose"], True),
        (["sync", "status", "-v"], True),
        (["sync", "status"], False),
    ],
)
def test_verbose_goes_before_or_after_the_command(argv: list[str], verbose: bool) -> None:
    args = cli_main.build_parser(argv).parse_args(argv)
    assert args.verbose is verbose
