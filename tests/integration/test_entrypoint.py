"""The shared entry point as each service's process sees it: an untested library version stops the
service at start with exit 2 and one line, before it connects to anything."""

import asyncio
from pathlib import Path

import aio_pika
import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT, Spawn, run_module
from tests.support.producer import collect_until, producer_env, wait_broker_connected
from tests.support.services import Endpoints

pytestmark = pytest.mark.integration

UNREACHABLE = {
    "AMQP_URI": "amqp://guest:guest@127.0.0.1:1/",
    "QUEUE_NAME": "q",
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "1",
    "POSTGRES_DB": "postgres",
    "POSTGRES_USER": "postgres",
    "STARTUP_TIMEOUT": "1s",
    "TESTER_ENDPOINT": "http://127.0.0.1:1",
}


def fake_distribution(root: Path, package: str, version: str) -> Path:
    """A dist-info that importlib.metadata finds before the real one (first on PYTHONPATH)."""
    info = root / f"{package}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    return root


@pytest.mark.parametrize(
    ("service", "package", "version", "tested", "chosen", "advice"),
    [
        (
            "producer",
            "aiormq",
            "7.3.0",
            "7.2",
            {"PUBLISH_MODE": "pipeline"},
            "install the tested version, or set PUBLISH_MODE=standard",
        ),
        (
            "producer",
            "pamqp",
            "3.3.0",
            "4.0",
            {"PUBLISH_MODE": "pipeline"},
            "install the tested version, or set PUBLISH_MODE=standard",
        ),
        # The slow-client guard is always on, in the standard publish mode too, and has no twin.
        (
            "producer",
            "uvicorn",
            "0.55.0",
            "0.54",
            {"PUBLISH_MODE": "standard"},
            "install the tested version",
        ),
    ],
)
def test_an_untested_library_version_exits_2_with_one_line(
    tmp_path: Path,
    service: str,
    package: str,
    version: str,
    tested: str,
    chosen: dict[str, str],
    advice: str,
) -> None:
    """A fast path that is chosen checks its library at start (the producer's are its default
    publish mode and its slow-client guard; the consumer has none: see the last two tests)."""
    fakes = fake_distribution(tmp_path / "fakes", package, version)
    env = {
        **UNREACHABLE,
        **chosen,
        "SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "PYTHONPATH": f"{fakes}:{PROJECT_ROOT}",
    }
    result = run_module(service, env, tmp_path / "run")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"{service}: {package} {version} is installed, but the fast path was tested with "
        f"{package} {tested}.x; {advice}"
    ]
    assert "Traceback" not in result.stdout + result.stderr


async def test_the_standard_publish_mode_runs_on_an_untested_aiormq(
    spawn: Spawn,
    endpoints: Endpoints,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
    tmp_path: Path,
) -> None:
    """The fallback the exit-2 line names: no start-up check, and callbacks are confirmed."""
    fakes = fake_distribution(tmp_path / "fakes", "aiormq", "7.3.0")
    port = free_port()
    env = producer_env(
        endpoints.amqp_uri,
        queue_name,
        tmp_path / "spool.sqlite3",
        port,
        PUBLISH_MODE="standard",
        PYTHONPATH=f"{fakes}:{PROJECT_ROOT}",
    )
    process = spawn("producer", env)
    wait_broker_connected(process, port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        response = await client.post("/callback", json={"object_ids": [4, 5]})
    assert response.status_code == 202, response.text
    # Confirmed straight away on a quiet broker; spooled and relayed if the shared one is busy.
    assert sorted(await collect_until(amqp_connection, queue_name, {4, 5}, timeout=20)) == [4, 5]
    assert await asyncio.to_thread(process.terminate) == 0


@pytest.mark.parametrize("status_client", ["standard", "httptools", None])
def test_the_public_status_clients_run_on_an_untested_aiohttp(
    tmp_path: Path, status_client: str | None
) -> None:
    """``STATUS_CLIENT=standard`` and ``httptools`` (the default: ``None`` sets nothing) use public
    APIs only: no version check stops them, whatever aiohttp is installed. The consumer goes on to
    connect (here to nothing) and exits 1 for that, not 2."""
    fakes = fake_distribution(tmp_path / "fakes", "aiohttp", "3.15.2")
    chosen = {"STATUS_CLIENT": status_client} if status_client else {}
    env = {**UNREACHABLE, **chosen, "PYTHONPATH": f"{fakes}:{PROJECT_ROOT}"}
    result = run_module("consumer", env, tmp_path / "run")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "dependency_unavailable" in result.stdout
    assert "tested with" not in result.stdout + result.stderr


def test_the_retired_fast_status_client_exits_2_naming_the_two_left(tmp_path: Path) -> None:
    """``STATUS_CLIENT=fast`` (aiohttp internals) is gone: a deployment that still sets it stops
    at start with one line that names the setting and both clients it can choose instead."""
    result = run_module("consumer", {**UNREACHABLE, "STATUS_CLIENT": "fast"}, tmp_path / "run")
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("consumer: configuration error: STATUS_CLIENT: fast was retired")
    assert "httptools" in line and "standard" in line
    assert "Traceback" not in result.stdout + result.stderr
