"""Fixtures of tests/containers: one engine, and each image built once, for this package.

The images are kept afterwards (the engine's build cache makes the next run fast);
every container, volume, network and background process is removed at the end, and
each test removes its own as it goes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.containers import engine as eng
from tests.containers.engine import Engine


@pytest.fixture(scope="package")
def engine(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Engine]:
    try:
        opened = eng.open_engine(tmp_path_factory.mktemp("engine"))
    except eng.EngineUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the container tests: {err}")
        pytest.skip(str(err))
    try:
        # The emulated base image takes minutes to make: start it now, while the
        # native tests run.
        if any(item.path.name == "test_platforms.py" for item in request.session.items):
            opened.later("emulated-base", lambda: eng.emulated_base_image(opened))
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="package")
def base_image(engine: Engine) -> str:
    return eng.base_image(engine, eng.NATIVE_ARCH)


@pytest.fixture(scope="package")
def server_image(engine: Engine, base_image: str) -> str:
    return eng.build_image(engine, f"localhost/{eng.PREFIX}:server", base_image, target="server")


@pytest.fixture(scope="package")
def appliance_image(engine: Engine, base_image: str) -> str:
    tag = f"localhost/{eng.PREFIX}:appliance"
    return eng.build_image(engine, tag, base_image, target="appliance")


@pytest.fixture(scope="package")
def seaweedfs_image(engine: Engine, base_image: str) -> str:
    tag = f"localhost/{eng.PREFIX}-seaweedfs:latest"
    return eng.build_image(engine, tag, base_image, target="seaweedfs")
