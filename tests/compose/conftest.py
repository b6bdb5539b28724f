"""The Docker engine and base images for the compose tests; a one-line skip when no engine can be
had, except under CI (``CI=true``), where that is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.compose import PUBSUB_EMULATOR_IMAGE, Engine, EngineUnavailable


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    try:
        acquired = Engine.acquire()
    except EngineUnavailable as why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a Docker engine for the compose tests: {why}", pytrace=False)
        pytest.skip(f"no Docker engine: {why}")
    yield acquired
    acquired.release()


@pytest.fixture(scope="session")
def base_images(engine: Engine) -> dict[str, str]:
    return engine.ensure_base_images()


@pytest.fixture(scope="session")
def pubsub_emulator_image(engine: Engine) -> str:
    """The emulator image docker-compose.pubsub.yml runs: "official" or "standin" (built from the
    Google Cloud SDK component installed here; without it, the tests that need it fail)."""
    images = engine.ensure_base_images("--pubsub-emulator")
    return images[PUBSUB_EMULATOR_IMAGE]
