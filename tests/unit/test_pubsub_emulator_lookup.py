"""Where the tests look for Google's Pub/Sub emulator, and the one line they fail with when
it is not there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pubsub_emulator import LAUNCHER, EmulatorMissing, find_emulator

pytestmark = pytest.mark.unit


def make_launcher(root: Path) -> Path:
    launcher = root / LAUNCHER
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    return launcher


def with_java(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    make_java = bin_dir / "java"
    bin_dir.mkdir()
    make_java.write_text("#!/bin/sh\n")
    make_java.chmod(0o755)
    return {"PATH": str(bin_dir)}


def test_the_first_sdk_that_has_it_is_used(tmp_path: Path) -> None:
    roots = (tmp_path / "missing-sdk", tmp_path / "sdk-a", tmp_path / "sdk-b")
    expected = make_launcher(roots[1])
    make_launcher(roots[2])

    assert find_emulator(with_java(tmp_path), roots) == expected


def test_the_override_wins_over_the_sdks(tmp_path: Path) -> None:
    roots = (tmp_path / "sdk",)
    make_launcher(roots[0])
    override = make_launcher(tmp_path / "elsewhere")

    found = find_emulator({**with_java(tmp_path), "PUBSUB_EMULATOR_BIN": str(override)}, roots)

    assert found == override


def test_missing_names_every_place_looked_at_in_one_line(tmp_path: Path) -> None:
    roots = (tmp_path / "sdk-a", tmp_path / "sdk-b")

    with pytest.raises(EmulatorMissing) as missing:
        find_emulator(with_java(tmp_path), roots)

    message = str(missing.value)
    assert "\n" not in message
    assert message.startswith("Pub/Sub emulator not found: looked at ")
    assert all(str(root / LAUNCHER) in message for root in roots)
    assert "PUBSUB_EMULATOR_BIN" in message


def test_a_missing_override_is_not_replaced_by_an_sdk(tmp_path: Path) -> None:
    roots = (tmp_path / "sdk",)
    make_launcher(roots[0])
    env = {**with_java(tmp_path), "PUBSUB_EMULATOR_BIN": str(tmp_path / "typo")}

    with pytest.raises(EmulatorMissing, match=r"looked at PUBSUB_EMULATOR_BIN=.*typo"):
        find_emulator(env, roots)


def test_a_launcher_that_is_not_executable_does_not_count(tmp_path: Path) -> None:
    roots = (tmp_path / "sdk",)
    make_launcher(roots[0]).chmod(0o644)

    with pytest.raises(EmulatorMissing):
        find_emulator(with_java(tmp_path), roots)


def test_no_java_is_said_plainly(tmp_path: Path) -> None:
    roots = (tmp_path / "sdk",)
    make_launcher(roots[0])
    (tmp_path / "empty").mkdir()

    with pytest.raises(EmulatorMissing, match="no java on PATH"):
        find_emulator({"PATH": str(tmp_path / "empty")}, roots)
