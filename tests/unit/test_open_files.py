"""The open-file limit decision: raise the soft limit when the hard one allows, refuse otherwise."""

from __future__ import annotations

import resource

import pytest

from common.open_files import (
    OTHER_DESCRIPTORS,
    OpenFileLimitTooLow,
    OpenFiles,
    soft_limit_to_set,
)
from consumer.settings import ConsumerSettings

pytestmark = pytest.mark.unit

INFINITY = resource.RLIM_INFINITY
NEED = OpenFiles(needed=2074, setting="MAX_CONSUMERS", value=2000, why="the reasons")


@pytest.mark.parametrize(
    ("soft", "hard", "expected"),
    [
        (2074, 2074, None),  # exactly enough
        (65536, 65536, None),  # more than enough: never lowered
        (INFINITY, INFINITY, None),
        (1024, 4096, 2074),  # the common default: raised to what is needed, not to the hard limit
        (1024, INFINITY, 2074),
        (2073, 2074, 2074),
    ],
)
def test_the_soft_limit_is_raised_to_what_is_needed_only_when_short(
    soft: int, hard: int, expected: int | None
) -> None:
    assert soft_limit_to_set(NEED, soft, hard) == expected


@pytest.mark.parametrize(("soft", "hard"), [(1024, 2073), (1024, 1024), (256, 512)])
def test_a_hard_limit_below_the_need_is_refused_with_one_line(soft: int, hard: int) -> None:
    with pytest.raises(OpenFileLimitTooLow) as refused:
        soft_limit_to_set(NEED, soft, hard)
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith("MAX_CONSUMERS=2000 needs 2074 open files (the reasons), but the ")
    assert f"hard limit is {hard}: lower MAX_CONSUMERS or raise the hard limit" in line
    assert "ulimit" in line and "ulimits: nofile" in line and "Kubernetes" in line


def test_the_consumer_needs_a_socket_per_lookup_and_connection_and_a_margin() -> None:
    settings = ConsumerSettings(  # type: ignore[call-arg]
        _env_file=None,
        amqp_uri="amqp://u:p@rabbit/",
        queue_name="q",
        postgres_host="db",
        postgres_db="d",
        postgres_user="u",
        tester_endpoint="http://tester:9010",
        max_consumers=30000,
        postgres_pool_size=25,
    )
    need = settings.open_files()
    assert need.needed == 30000 + 25 + OTHER_DESCRIPTORS
    assert (need.setting, need.value) == ("MAX_CONSUMERS", 30000)
    assert (
        need.why == f"30000 status lookups + 25 database connections + {OTHER_DESCRIPTORS} others"
    )
