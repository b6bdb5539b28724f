"""A run of the test hosts killed half way leaves nothing the next run trips on. Its own module:
clearing the wreck clears every ``lsfault-`` host, so no other module's hosts may be up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import netns
from tests.support.netns import HostNetwork
from tests.support.processes import PROJECT_ROOT

pytestmark = pytest.mark.faults

BUILD_AND_HANG = """
import time
from tests.support.netns import HostNetwork
HostNetwork(["x", "y"]).create()
print("up", flush=True)
time.sleep(120)
"""


def test_a_run_killed_half_way_leaves_nothing_the_next_one_trips_on() -> None:
    why = netns.available()
    if why:
        pytest.fail(f"the faults tier cannot run here: {why}")
    interrupted = subprocess.Popen(
        [sys.executable, "-c", BUILD_AND_HANG], stdout=subprocess.PIPE, cwd=PROJECT_ROOT
    )
    try:
        assert interrupted.stdout is not None
        assert interrupted.stdout.readline().strip() == b"up"
    finally:
        interrupted.kill()
        interrupted.wait(timeout=10)
        if interrupted.stdout is not None:
            interrupted.stdout.close()
    stale = netns.leftovers()
    assert {f"{netns.PREFIX}x", f"{netns.PREFIX}y", netns.SWITCH, netns.GATEWAY_LINK} <= set(stale)
    # A new run builds over the wreck, with the same names and addresses.
    again = HostNetwork(["x"]).create()
    try:
        assert set(netns.leftovers()) == {netns.SWITCH, netns.GATEWAY_LINK, f"{netns.PREFIX}x"}
        addresses = again.hosts["x"].run("ip", "-o", "-4", "addr", "show").stdout
        assert f"{netns.SUBNET[netns.FIRST_HOST]}/24" in addresses
    finally:
        again.remove()
    assert netns.leftovers() == []
