"""The image for another architecture (arm64 on an amd64 host), built and run under
emulation (qemu-user-static through binfmt_misc)."""

from __future__ import annotations

import os

import pytest

from tests.containers import engine as eng
from tests.containers.engine import Engine


def test_emulated_build_starts_answers_version_and_becomes_healthy(engine: Engine) -> None:
    if not eng.emulation_available(eng.EMULATED_ARCH):
        missing = f"no binfmt_misc handler for {eng.EMULATED_ARCH}: run `make deps`"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    base = engine.result("emulated-base", lambda: eng.emulated_base_image(engine))
    platform = f"linux/{eng.EMULATED_ARCH}"
    tag = eng.build_image(
        engine, f"localhost/{eng.PREFIX}:server-{eng.EMULATED_ARCH}", base,
        target="server", platform=platform,
    )  # fmt: skip
    assert engine.client.images.get(tag).attrs["Architecture"] == eng.EMULATED_ARCH

    client = engine.client
    for program in ("anysync-server", "anysync"):
        version = client.containers.run(
            tag, [program, "--version"], name=eng.new_name(), remove=True
        )
        assert version.decode().startswith(f"{program} "), version
    machine = client.containers.run(tag, ["uname", "-m"], name=eng.new_name(), remove=True)
    assert machine.decode().strip() == {"arm64": "aarch64", "amd64": "x86_64"}[eng.EMULATED_ARCH]

    container = client.containers.run(tag, name=eng.new_name(), detach=True)
    try:
        eng.wait_healthy(container, timeout=300)
        assert "AnySync server listening on 0.0.0.0:65065" in eng.logs(container)
    finally:
        container.remove(force=True, v=True)
