"""The open-file limit decision: raise the soft limit when the hard one allows, refuse otherwise."""

from __future__ import annotations

import resource

import pytest

from common.open_files import (
    OTHER_DESCRIPTORS,
    OpenFileLimitTooLow,
    OpenFiles,
    connection_budget,
    soft_limit_to_set,
)
from consumer.settings import ConsumerSettings
from producer.settings import ProducerSettings

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


@pytest.mark.parametrize(
    ("open_files", "safe", "default", "backlog"),
    [
        (1024, 1024 - OTHER_DESCRIPTORS - 256, 1024 - OTHER_DESCRIPTORS - 256, 256),
        (4096, 4096 - OTHER_DESCRIPTORS - 1024, 4096 - OTHER_DESCRIPTORS - 1024, 1024),
        (20_000, 20_000 - OTHER_DESCRIPTORS - 2048, 10_000, 2048),
        (50, 0, 0, 16),
    ],
)
def test_the_budget_keeps_connections_and_the_listen_queue_within_the_open_files(
    open_files: int, safe: int, default: int, backlog: int
) -> None:
    budget = connection_budget(open_files)
    assert (budget.descriptor_safe, budget.default, budget.backlog) == (safe, default, backlog)
    if open_files > 100:
        assert budget.descriptor_safe + budget.backlog + OTHER_DESCRIPTORS <= open_files


def test_unlimited_open_files_still_cap_connections_by_default() -> None:
    assert connection_budget(None).default == 10_000


def test_the_producer_reads_its_open_file_limit_once_per_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Validation, the cap, the soft limit to raise and the backlog share one reading."""
    reads: list[int] = []

    def getrlimit(which: int) -> tuple[int, int]:
        reads.append(which)
        return (1024, 8192)

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    settings = ProducerSettings(amqp_uri="amqp://guest:guest@127.0.0.1:5672/", queue_name="q")
    budget = connection_budget(8192)
    assert settings.connection_budget == budget
    assert settings.max_connections == budget.default
    assert settings.open_files().needed == budget.default + OTHER_DESCRIPTORS + budget.backlog
    assert reads == [resource.RLIMIT_NOFILE]
