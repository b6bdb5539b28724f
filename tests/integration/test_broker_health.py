"""The tests' broker check: it catches the dead dead-letter supervisor and repairs it in place."""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.broker_health import REPAIR, dead_lettering_works, ensure_dead_lettering
from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.services import Endpoints

pytestmark = pytest.mark.integration


async def test_the_run_broker_hosts_at_least_once_dead_lettering(endpoints: Endpoints) -> None:
    assert await dead_lettering_works(endpoints.amqp_uri) is None


def test_a_dead_dlx_supervisor_is_detected_then_repaired_without_a_restart() -> None:
    if why := PrivateRabbitNode.available():
        pytest.fail(f"a private node is needed: {why}")
    # Not under pytest's tmp_path: that is private to root, and the node runs as rabbitmq.
    base = Path(tempfile.mkdtemp(prefix="lastseen-dlx-"))
    base.chmod(0o755)
    node = PrivateRabbitNode(base / "rabbit").start()
    try:
        # The state the upstream bug leaves behind: the supervisor gone, the node otherwise fine.
        assert node.eval("supervisor:terminate_child(rabbit_sup, rabbit_fifo_dlx_sup).") == "ok"
        broken = ensure_dead_lettering(node.amqp_uri, repair=lambda: False)
        assert broken is not None
        assert "rabbitmq/rabbitmq-server#16652" in broken and REPAIR in broken

        def repair() -> bool:
            return node.eval(REPAIR).startswith("{ok,")

        assert ensure_dead_lettering(node.amqp_uri, repair=repair) is None
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
