"""What the image does: build the wheel, install it into a fresh venv, and start every service
from outside the source tree."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from common.versions import TESTED, minor_of
from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT, ServiceProcess
from tests.support.suite import READY_EVENTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), "."],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("lastseen-*.whl")
    # constraints.txt, minus the libraries whose internals are used: their versions must come from
    # the wheel's own metadata, as for anyone who runs `pip install lastseen`.
    constraints = root / "constraints-without-tested.txt"
    constraints.write_text(
        "".join(
            line + "\n"
            for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines()
            if line.split("==")[0].strip().lower() not in TESTED
        )
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(constraints),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv


def test_the_wheel_pins_every_library_whose_internals_are_used(installed_venv: Path) -> None:
    (wheel,) = installed_venv.parent.joinpath("wheels").glob("lastseen-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        requires = [
            line.removeprefix("Requires-Dist: ")
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist: ") and "extra ==" not in line
        ]
    for package, tested in TESTED.items():
        major, minor = map(int, tested.split("."))
        (requirement,) = [r for r in map(Requirement, requires) if r.name == package]
        assert requirement.specifier == SpecifierSet(f">={tested},<{major}.{minor + 1}"), str(
            requirement
        )
    # aiohttp is used through its public API only (STATUS_CLIENT=fast was retired): a normal
    # range below the next major, no longer one minor.
    (aiohttp,) = [r for r in requires if r.startswith("aiohttp")]
    assert aiohttp.replace(" ", "") in ("aiohttp<4,>=3.9", "aiohttp>=3.9,<4"), aiohttp
    found = subprocess.run(
        [
            str(installed_venv / "bin/python"),
            "-c",
            "import json, importlib.metadata as m; "
            f"print(json.dumps({{p: m.version(p) for p in {sorted(TESTED)!r}}}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {p: minor_of(v) for p, v in json.loads(found).items()} == TESTED


def installed_service(
    venv: Path, module: str, env: dict[str, str], workdir: Path
) -> ServiceProcess:
    """A service run by the fresh venv's interpreter, with no path into the source tree."""
    service = ServiceProcess(module, env, workdir, python=str(venv / "bin/python"))
    service.env.pop("PYTHONPATH")
    return service.start()


def test_the_installed_wheel_runs_every_service(
    installed_venv: Path, service_env: dict[str, str], tmp_path: Path
) -> None:
    located = subprocess.run(
        [str(installed_venv / "bin/python"), "-c", "import common; print(common.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(installed_venv) in located and str(PROJECT_ROOT) not in located

    producer_port, tester_port = free_port(), free_port()
    env = {
        **service_env,
        "PRODUCER_PORT": str(producer_port),
        "TESTER_PORT": str(tester_port),
        "CALLBACK_ENDPOINT": f"http://127.0.0.1:{producer_port}",
        "TESTER_ENDPOINT": f"http://127.0.0.1:{tester_port}",
        "SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "TESTER_INTERVAL": "1h",
    }
    started: list[ServiceProcess] = []
    try:
        for module in ("producer", "tester", "consumer", "routine"):
            started.append(installed_service(installed_venv, module, env, tmp_path / module))
        by_module = {service.module: service for service in started}
        for module, port in (("producer", producer_port), ("tester", tester_port)):
            by_module[module].wait_ready(lambda p=port: _healthy(p), timeout=30)
        for module in ("consumer", "routine"):
            by_module[module].wait_for_log(READY_EVENTS[module], timeout=30)
        assert httpx.get(f"http://127.0.0.1:{tester_port}/objects/4", timeout=10).json() == {
            "id": 4,
            "online": True,
        }
    finally:
        for service in started:
            service.stop()
    for service in started:
        assert service.returncode == 0, service.output()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_image_entry_points_exist() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001:10001\n" in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert dockerfile.count("FROM ") >= 2, "multi-stage: no build tools at run time"


def test_the_installed_wheel_has_the_live_view(installed_venv: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(installed_venv / "bin/python"), "-m", "liveview", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--once" in done.stdout and "--json" in done.stdout
