"""The CLI's manners on a terminal and in a pipe (issue #16): `anysync ls | head` ends
quietly, Ctrl-D at a prompt is one line, a wrong password is said once, the server
address is taken in the forms users paste. The real CLI against a real server."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import subprocess
import termios
import time
from pathlib import Path

from tests.integration.harness import CLIENT, Client, Server, base_env

EMAIL = "manners@example.org"


def test_a_reader_that_goes_away_ends_the_listing_quietly(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, EMAIL)
    tree = tmp_path / "many"
    tree.mkdir()
    for i in range(2000):  # ~100 KiB of listing: more than a pipe holds
        (tree / f"a-file-with-a-long-enough-name-{i:05}.txt").write_text(str(i))
    device_a.run("backup", str(tree))

    env = base_env() | {"ANYSYNC_HOME": str(device_a.home)}
    proc = subprocess.Popen(
        [CLIENT, "ls", "-r", "latest"],
        env=env | {"ANYSYNC_TESTONLY_FAULT": "crypto.scrypt"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # `head -1`: one line, then the reader leaves
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert err == ""  # no traceback, no "Exception ignored ... BrokenPipeError"


def _on_a_terminal(argv: list[str], env: dict[str, str], keys: bytes) -> tuple[int, str]:
    """Run `anysync argv` with a pseudo-terminal as its controlling terminal (so getpass
    prompts on it), type `keys` once the prompt shows, return (exit code, all output)."""
    master, slave = pty.openpty()

    def own_the_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [CLIENT, *argv], env=env, stdin=slave, stdout=slave, stderr=slave,
        preexec_fn=own_the_terminal,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"assword" not in seen:
        assert time.monotonic() < deadline, seen
        seen += os.read(master, 4096)
    os.write(master, keys)
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return proc.wait(timeout=60), seen.decode(errors="replace")


def test_ctrl_d_at_the_password_prompt_is_one_line(
    server: Server, device_a: Client, device_b: Client
) -> None:
    device_a.signup(server, EMAIL)
    env = base_env() | {"ANYSYNC_HOME": str(device_b.home)}
    code, out = _on_a_terminal(
        ["login", "--server", server.address, "--email", EMAIL,
         "--fingerprint", server.fingerprint()],
        env, b"\x04",
    )  # fmt: skip
    assert code == 1, out
    assert "aborted at the prompt" in out
    assert "Traceback" not in out and "EOFError" not in out
    assert not (device_b.home / "config.json").exists()


def test_a_wrong_password_is_said_once(server: Server, device_a: Client, device_b: Client) -> None:
    device_a.signup(server, EMAIL)
    proc = device_b.run(
        "login", "--server", server.address, "--email", EMAIL,
        "--fingerprint", server.fingerprint(), password="not the password", check=False,
    )  # fmt: skip
    assert proc.returncode == 3
    assert proc.stderr.count("wrong e-mail or password") == 1, proc.stderr


def test_the_server_address_in_the_forms_users_paste(
    server: Server, device_a: Client, device_b: Client
) -> None:
    port = server.address.rsplit(":", 1)[1]
    device_a.run(
        "signup", "--server", f"https://localhost:{port}/", "--email", EMAIL,
        "--invite", server.invite(), "--fingerprint", server.fingerprint(),
    )  # fmt: skip
    assert device_a.run("snapshots", "-v").returncode == 0  # -v after the command

    plain = device_b.run(
        "login", "--server", f"http://localhost:{port}", "--email", EMAIL, check=False
    )
    assert plain.returncode == 2 and "TLS only" in plain.stderr
    # argparse's usage, then the one error line: no traceback, no connection attempt
    assert plain.stderr.strip().splitlines()[-1].startswith("anysync login: error:")
    assert "Traceback" not in plain.stderr


def test_json_with_a_name_that_is_not_utf8_stays_valid_and_gives_the_bytes_back(
    server: Server, device_a: Client, tmp_path: Path
) -> None:
    device_a.signup(server, EMAIL)
    tree = tmp_path / "names"
    tree.mkdir()
    raw = os.fsencode(tree) + b"/caf\xe9.txt"  # Latin-1 é: not UTF-8
    with open(raw, "wb") as f:
        f.write(b"x")
    device_a.run("backup", str(tree))
    env = base_env() | {
        "ANYSYNC_HOME": str(device_a.home),
        "ANYSYNC_TESTONLY_FAULT": "crypto.scrypt",
    }
    for locale in ("C.UTF-8", "C"):
        proc = subprocess.run(
            [CLIENT, "ls", "-r", "latest", "--json"],
            env=env | {"LC_ALL": locale}, capture_output=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        listing = json.loads(proc.stdout.decode("utf-8"))  # strict: valid UTF-8
        paths = [os.fsencode(e["path"]) for e in listing]
        assert b"names/caf\xe9.txt" in paths, paths
