"""The shipped files, checked without an engine: linters, compose's own validation,
the documentation of every variable, and the entrypoint's config editing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from anysync.errors import UsageError
from anysync.server.config import TEMPLATE, parse_config
from anysync.server.home import init_home
from tests.containers import engine as eng

REPO = eng.REPO
BIN = Path(sys.executable).parent
SCRIPTS = [
    REPO / "docker" / "entrypoint.sh",
    REPO / "docker" / "appliance.sh",
    *sorted((REPO / "scripts").glob("deps-*.sh")),  # -x: with scripts/lib/apt.sh
]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    proc = run(str(BIN / "hadolint"), str(REPO / "Dockerfile"))  # even an "info" fails
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_yamllint_passes_compose_yaml() -> None:
    config = REPO / "tests" / "containers" / "yamllint.yaml"
    proc = run(str(BIN / "yamllint"), "--strict", "-c", str(config), str(REPO / "compose.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def compose_config(
    env: dict[str, str], env_file: str = os.devnull, *args: str
) -> subprocess.CompletedProcess[str]:
    # No engine needed; --env-file keeps a developer's .env out of it.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANYSYNC_", "DOCKER_"))}
    return run(
        *eng.compose_command(), "--project-directory", str(REPO), "--env-file", env_file,
        "config", *args, env=clean | env,
    )  # fmt: skip


def test_compose_config_is_valid() -> None:
    proc = compose_config({"ANYSYNC_S3_SECRET_KEY": "x" * 32}, os.devnull, "--quiet")
    assert proc.returncode == 0, proc.stderr


def test_the_first_command_of_run_with_docker_makes_a_complete_env_file(tmp_path: Path) -> None:
    # docs/containers.md: install -m 600 .env.example .env && echo "ANYSYNC_S3_SECRET_KEY=…" >> .env
    env_file = tmp_path / ".env"
    shutil.copyfile(REPO / ".env.example", env_file)
    with env_file.open("a") as f:
        f.write("ANYSYNC_S3_SECRET_KEY=0123456789abcdef\n")
    proc = compose_config({}, str(env_file), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert services["objectstore"]["environment"]["MINIO_ROOT_PASSWORD"] == "0123456789abcdef"
    published = {p["published"] for s in services.values() for p in s["ports"]}
    assert published == {"65065", "65064"}
    assert services["anysync"]["secrets"][0]["source"] == "s3_secret_key"


def test_compose_refuses_to_start_without_the_secret() -> None:
    proc = compose_config({}, os.devnull, "--quiet")
    assert proc.returncode != 0
    assert "required variable ANYSYNC_S3_SECRET_KEY is missing a value" in proc.stderr
    assert ".env.example" in proc.stderr


def test_env_example_explains_every_variable_of_compose_yaml() -> None:
    used = set(re.findall(r"\$\{(\w+)", (REPO / "compose.yaml").read_text()))
    used |= {"BASE_IMAGE", "EXTRA_CA_CERTS"}  # build arguments taken from the environment
    example = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?(\w+)=", example, re.MULTILINE))
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    assert os.access(script, os.X_OK)
    shell = "bash" if "bash" in script.read_text().splitlines()[0] else "sh"
    proc = run(shell, "-n", str(script))
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = run("shellcheck", "-x", str(script))
        assert proc.returncode == 0, proc.stdout


def load_configure() -> ModuleType:
    spec = importlib.util.spec_from_file_location("configure", REPO / "docker" / "configure.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configure_sets_keys_in_place_of_the_templates_examples() -> None:
    configure = load_configure()
    text = configure.set_key(TEMPLATE, "storage", "kind", "s3")
    text = configure.set_key(text, "storage", "endpoint", "http://store:9000")
    text = configure.set_key(text, "storage", "bucket", 'a "quoted" bucket')
    text = configure.set_key(text, "storage", "direct", True)
    text = configure.set_key(text, "", "registration", "open")
    text = configure.set_key(text, "log", "level", "debug")
    text = configure.set_key(text, "brand-new", "key", "value")
    data = tomllib.loads(text)
    assert data["registration"] == "open"
    assert data["storage"]["endpoint"] == "http://store:9000"
    assert data["storage"]["bucket"] == 'a "quoted" bucket'
    assert data["storage"]["direct"] is True
    assert data["log"]["level"] == "debug"
    assert data["brand-new"] == {"key": "value"}
    # The commented example became the setting: one line each, comments kept.
    assert len(re.findall(r"^#? ?endpoint = ", text, re.MULTILINE)) == 1
    assert text.count("# Who may create an account") == 1
    del data["brand-new"], data["storage"]["direct"]  # (the server's parser rejects any bool)
    parse_config(data | {"storage": data["storage"] | {"access_key": "k", "secret_key_env": "S"}})


def test_configure_refuses_to_hide_local_packs_behind_an_s3_store(tmp_path: Path) -> None:
    configure = load_configure()
    home = init_home(tmp_path / "home").root
    s3 = {
        "ANYSYNC_S3_ENDPOINT": "http://store:9000",
        "ANYSYNC_S3_BUCKET": "anysync",
        "ANYSYNC_S3_ACCESS_KEY": "anysync",
        "ANYSYNC_S3_SECRET_KEY_FILE": "/run/secrets/s3_secret_key",
        "ANYSYNC_CONFIG_FILE": str(tmp_path / "none.toml"),
    }
    (home / "objects" / "ab").mkdir()
    (home / "objects" / "ab" / "pack").write_bytes(b"x")
    before = (home / "server.toml").read_text()
    with pytest.raises(UsageError, match="would hide them"):
        configure.configure(home, s3)
    assert (home / "server.toml").read_text() == before

    (home / "objects" / "ab" / "pack").unlink()
    configure.configure(home, s3)  # nothing stored yet: fine
    assert 'kind = "s3"' in (home / "server.toml").read_text()
