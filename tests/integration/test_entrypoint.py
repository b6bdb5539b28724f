"""The shared entry point as each service's process sees it: an untested library version stops the
service at start with exit 2 and one line, before it connects to anything."""

from pathlib import Path

import pytest

from tests.support.processes import PROJECT_ROOT, run_module

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
    ("service", "package", "version", "tested", "fallback"),
    [
        ("consumer", "aiohttp", "3.15.2", "3.14", "STATUS_CLIENT=standard"),
        ("producer", "aiormq", "7.3.0", "7.2", "PUBLISH_MODE=standard"),
        ("producer", "pamqp", "3.3.0", "4.0", "PUBLISH_MODE=standard"),
    ],
)
def test_an_untested_library_version_exits_2_with_one_line(
    tmp_path: Path, service: str, package: str, version: str, tested: str, fallback: str
) -> None:
    fakes = fake_distribution(tmp_path / "fakes", package, version)
    env = {
        **UNREACHABLE,
        "SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "PYTHONPATH": f"{fakes}:{PROJECT_ROOT}",
    }
    result = run_module(service, env, tmp_path / "run")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"{service}: {package} {version} is installed, but the fast path was tested with "
        f"{package} {tested}.x; install the tested version, or set {fallback}"
    ]
    assert "Traceback" not in result.stdout + result.stderr
