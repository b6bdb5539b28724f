"""Node lists: AMQP_URI as several URIs of one cluster, POSTGRES_HOST/POSTGRES_PORT as libpq's
lists; every bad list refused with a message naming the entry; the failover order."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError
from yarl import URL

from common.nodes import (
    FailoverConnection,
    NodeListError,
    connect_any,
    mask,
    parse_amqp_nodes,
    parse_hosts,
    parse_ports,
    postgres_hostlist,
    shuffled,
)
from common.settings import describe_errors
from consumer.settings import ConsumerSettings

pytestmark = pytest.mark.unit

ONE = "amqp://u:secret@rabbit-1:5672/"
THREE = "amqp://u:secret@rabbit-1:5672/,amqp://u:secret@rabbit-2:5672/,amqp://u:secret@rabbit-3/"


def test_one_uri_is_a_list_of_one() -> None:
    assert parse_amqp_nodes(ONE) == (ONE,)


def test_several_uris_keep_their_order_and_lose_surrounding_spaces() -> None:
    assert parse_amqp_nodes(THREE.replace(",", " , ")) == tuple(THREE.split(","))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "the value is empty"),
        (f"{ONE},", "entry 2 of 2 is empty"),
        (f",{ONE}", "entry 1 of 2 is empty"),
        (f"{ONE},,{ONE}", "entry 2 of 3 is empty"),
        (f"{ONE}, ", "entry 2 of 2 is empty"),
        (f"{ONE},http://u:secret@rabbit-2/", "entry 2 of 2 'http://u:***@rabbit-2/' must start"),
        (f"{ONE},rabbit-2:5672", "entry 2 of 2 'rabbit-2:5672' must start with amqp://"),
        (f"{ONE},amqp://u:secret@rabbit-2:port/", "entry 2 of 2 'amqp://u:***@rabbit-2:port/'"),
        (f"{ONE},amqp://u:secret@[::1/", "does not parse"),
        (f"{ONE},amqp:///vhost", "entry 2 of 2 'amqp:///vhost' names no host"),
        (f"{ONE},amqp://u:secret@rabbit-2:70000/", "does not parse"),
        (f"{ONE},amqp://u:secret@rabbit-2/other", "names vhost 'other', entry 1 names '/'"),
        ("amqp://u:s@a/v,amqp://u:s@b/", "entry 2 of 2 'amqp://u:***@b/' names vhost '/'"),
        (f"{ONE},amqp://u:other@rabbit-2/", "other credentials than entry 1"),
        (f"{ONE},amqps://u:secret@rabbit-2/", "is amqps://, entry 1 is amqp://"),
        (f"{ONE},amqp://v:secret@rabbit-2/", "other credentials than entry 1"),
        (f"{ONE},amqp://rabbit-2/", "other credentials than entry 1"),
    ],
)
def test_bad_broker_lists_name_the_entry(value: str, expected: str) -> None:
    with pytest.raises(NodeListError) as refused:
        parse_amqp_nodes(value)
    assert expected in str(refused.value)
    assert "secret" not in str(refused.value) and "other@" not in str(refused.value)


def test_vhost_spellings_of_the_default_are_the_same_vhost() -> None:
    assert len(parse_amqp_nodes("amqp://u:p@a,amqp://u:p@b/,amqp://u:p@c/%2F")) == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("db-1,", "entry 2 of 2 is empty"),
        ("db-1,,db-2", "entry 2 of 3 is empty"),
        ("db-1,user@db-2", "entry 2 of 2 'user@db-2' is not a host name"),
        ("db-1,db 2", "is not a host name"),
    ],
)
def test_bad_host_lists_name_the_entry(value: str, expected: str) -> None:
    with pytest.raises(NodeListError, match=expected):
        parse_hosts(value)


@pytest.mark.parametrize(
    ("value", "hosts", "expected"),
    [
        ("5432,", 2, "entry 2 of 2 is empty"),
        ("5432,x", 2, "entry 2 of 2 'x' is not a port number"),
        ("5432,0", 2, "entry 2 of 2 '0' is out of 1-65535"),
        ("5432,70000", 2, "out of 1-65535"),
        ("1,2", 3, "2 ports for 3 hosts"),
        ("1,2,3", 2, "3 ports for 2 hosts"),
        ("1,2", 1, "2 ports for 1 hosts"),
    ],
)
def test_bad_port_lists_name_the_entry(value: str, hosts: int, expected: str) -> None:
    with pytest.raises(NodeListError, match=expected):
        parse_ports(value, hosts)


def test_one_port_serves_every_host_or_one_per_host() -> None:
    assert postgres_hostlist(["a", "b"], parse_ports("6432", 2)) == "a:6432,b:6432"
    assert postgres_hostlist(["a", "b"], parse_ports("1, 2", 2)) == "a:1,b:2"
    assert postgres_hostlist(["::1", "[::2]"], [5]) == "[::1]:5,[::2]:5"


BASE = {
    "AMQP_URI": ONE,
    "QUEUE_NAME": "q",
    "POSTGRES_HOST": "db",
    "POSTGRES_DB": "lastseen",
    "POSTGRES_USER": "u",
    "POSTGRES_PASSWORD": "pw",
    "TESTER_ENDPOINT": "http://tester:9010",
}


def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> ConsumerSettings:
    monkeypatch.chdir(tmp_path)  # no .env here
    for name, value in {**BASE, **env}.items():
        monkeypatch.setenv(name, value)
    return ConsumerSettings()  # type: ignore[call-arg]


def test_one_host_keeps_todays_dsn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _settings(monkeypatch, tmp_path, POSTGRES_PORT="6543")
    assert settings.postgres_port == 6543
    assert settings.postgres_dsn == "postgresql://u:pw@db:6543/lastseen"
    assert settings.amqp_nodes == (ONE,)


def test_several_hosts_make_a_multi_host_dsn_that_follows_the_primary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _settings(
        monkeypatch, tmp_path, POSTGRES_HOST="db-1,db-2", POSTGRES_PORT="5432,5433", AMQP_URI=THREE
    )
    assert settings.postgres_dsn == (
        "postgresql://u:pw@db-1:5432,db-2:5433/lastseen?target_session_attrs=read-write"
    )
    assert len(settings.amqp_nodes) == 3
    shared = _settings(monkeypatch, tmp_path, POSTGRES_HOST="db-1,db-2", POSTGRES_PORT="5433")
    assert "@db-1:5433,db-2:5433/" in shared.postgres_dsn


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AMQP_URI": f"{ONE},"}, "AMQP_URI: entry 2 of 2 is empty"),
        ({"AMQP_URI": f"{ONE},amqp://u:secret@b/v"}, "AMQP_URI: entry 2 of 2"),
        ({"POSTGRES_HOST": "a,,b"}, "POSTGRES_HOST: entry 2 of 3 is empty"),
        ({"POSTGRES_HOST": "a,b", "POSTGRES_PORT": "1,2,3"}, "POSTGRES_PORT: 3 ports for 2"),
        ({"POSTGRES_PORT": "http"}, "POSTGRES_PORT: Input should be a valid integer"),
    ],
)
def test_settings_refuse_bad_lists_in_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        _settings(monkeypatch, tmp_path, **env)
    line = describe_errors(refused.value)
    assert expected in line
    assert "\n" not in line and "secret" not in line


def test_each_process_shuffles_its_own_order() -> None:
    nodes = [f"amqp://n{i}" for i in range(3)]
    orders = {tuple(shuffled(nodes, random.Random(seed))) for seed in range(30)}
    assert len(orders) > 1
    assert all(sorted(order) == nodes for order in orders)


def test_mask_hides_passwords_even_in_what_does_not_parse() -> None:
    assert mask("amqp://u:pw@h/") == "amqp://u:***@h/"
    assert "pw" not in mask("amqp://u:pw@[::1/")


async def test_connect_any_moves_past_dead_nodes_from_the_given_start() -> None:
    tried: list[str] = []

    async def connect(node: str) -> str:
        tried.append(node)
        if node != "c":
            raise ConnectionRefusedError(node)
        return f"connection to {node}"

    assert await connect_any(["a", "b", "c", "d"], connect, start=3) == (2, "connection to c")
    assert tried == ["d", "a", "b", "c"]


async def test_connect_any_raises_the_last_error_when_every_node_is_dead() -> None:
    async def connect(node: str) -> str:
        raise ConnectionRefusedError(node)

    with pytest.raises(ConnectionRefusedError, match="b"):
        await connect_any(["a", "b"], connect)


async def test_connect_any_does_not_hide_bugs() -> None:
    async def connect(node: str) -> str:
        raise KeyError(node)

    with pytest.raises(KeyError):
        await connect_any(["a", "b"], connect)


async def test_a_failover_connection_is_complete_when_built_and_cycles_its_nodes() -> None:
    nodes = ["amqp://a/", "amqp://b/", "amqp://c/"]
    connection = FailoverConnection(
        URL(nodes[1]), nodes=nodes, node_index=1, initial_backoff=0.2, max_backoff=5.0
    )
    assert connection.reconnect_interval == 0.2  # aio-pika's first wait: the backoff's first
    assert [connection.advance() for _ in range(3)] == ["amqp://c/", "amqp://a/", "amqp://b/"]
    assert str(connection.url) == "amqp://b/"
    await connection.close()  # never connected: closing is still clean


async def test_a_failover_connection_without_a_list_is_its_one_node() -> None:
    connection = FailoverConnection(URL("amqp://a/"), initial_backoff=0.2, max_backoff=5.0)
    assert connection.nodes == ("amqp://a/",)
    assert connection.advance() == "amqp://a/"
    await connection.close()
