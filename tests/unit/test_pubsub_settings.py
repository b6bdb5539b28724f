"""Pub/Sub settings and names: what a bad value is refused with (exit 2, one line naming it)."""

from __future__ import annotations

import pytest

from common.broker.pubsub_topology import (
    PubSubSettings,
    PubSubSettingsError,
    PubSubTopology,
    pubsub_settings,
    pubsub_settings_or_exit,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "host", ["localhost:8085", "127.0.0.1:1", "pubsub-emulator:65535", "[::1]:8085"]
)
def test_emulator_hosts_google_clients_take(host: str) -> None:
    settings = pubsub_settings({"PUBSUB_PROJECT_ID": "lastseen-dev", "PUBSUB_EMULATOR_HOST": host})
    assert settings == PubSubSettings("lastseen-dev", host)


@pytest.mark.parametrize(
    "host",
    [
        "http://localhost:8085",
        "localhost",
        "localhost:",
        ":8085",
        "localhost:0",
        "localhost:65536",
        "localhost:80a",
        "localhost:8085/v1",
        "[::1:8085",
        "[nonsense]:8085",
        "local host:8085",
    ],
)
def test_a_bad_emulator_host_names_the_variable(host: str) -> None:
    with pytest.raises(PubSubSettingsError) as bad:
        pubsub_settings({"PUBSUB_PROJECT_ID": "lastseen-dev", "PUBSUB_EMULATOR_HOST": host})
    assert bad.value.variable == "PUBSUB_EMULATOR_HOST"
    assert str(bad.value).startswith("PUBSUB_EMULATOR_HOST: ")
    assert repr(host) in str(bad.value)


def test_no_emulator_host_means_the_service() -> None:
    for environ in (
        {"PUBSUB_PROJECT_ID": "lastseen-dev"},
        {"PUBSUB_PROJECT_ID": "lastseen-dev", "PUBSUB_EMULATOR_HOST": ""},
    ):
        assert pubsub_settings(environ).emulator_host is None


@pytest.mark.parametrize("project", ["lastseen-dev", "a12345", "example.com:my-project"])
def test_project_ids_google_allows(project: str) -> None:
    assert pubsub_settings({"PUBSUB_PROJECT_ID": project}).project_id == project


@pytest.mark.parametrize(
    "project",
    ["", "short", "Upper-case", "1starts-with-digit", "ends-with-hyphen-", "a" * 31, "has space x"],
)
def test_a_bad_or_missing_project_id_names_the_variable(project: str) -> None:
    with pytest.raises(PubSubSettingsError) as bad:
        pubsub_settings({"PUBSUB_PROJECT_ID": project})
    assert bad.value.variable == "PUBSUB_PROJECT_ID"


def test_a_bad_setting_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        pubsub_settings_or_exit(
            {"PUBSUB_PROJECT_ID": "lastseen-dev", "PUBSUB_EMULATOR_HOST": "http://x:1"}, "consumer"
        )

    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("consumer: configuration error: PUBSUB_EMULATOR_HOST: ")


def test_names_derive_from_the_queue_name() -> None:
    topology = PubSubTopology.for_queue("lastseen-dev", "callbacks")

    assert topology == PubSubTopology(
        topic="projects/lastseen-dev/topics/callbacks",
        work_subscription="projects/lastseen-dev/subscriptions/callbacks.work",
        dead_topic="projects/lastseen-dev/topics/callbacks.dead",
        dead_subscription="projects/lastseen-dev/subscriptions/callbacks.dead",
    )


@pytest.mark.parametrize("queue", ["a:b", "1queue", "goog-queue", "ab", "has space", "é-queue"])
def test_a_queue_name_pubsub_refuses_names_queue_name(queue: str) -> None:
    with pytest.raises(PubSubSettingsError) as bad:
        PubSubTopology.for_queue("lastseen-dev", queue)
    assert bad.value.variable == "QUEUE_NAME"


def test_the_work_subscription_dead_letters_to_the_dead_topic() -> None:
    topology = PubSubTopology.for_queue("lastseen-dev", "callbacks")

    request = topology.work_subscription_request(max_delivery_attempts=5, ack_deadline_s=60)

    assert request["topic"] == topology.topic
    assert request["dead_letter_policy"] == {
        "dead_letter_topic": topology.dead_topic,
        "max_delivery_attempts": 5,
    }
    for attempts in (4, 101):
        with pytest.raises(ValueError, match=r"5\.\.100"):
            topology.work_subscription_request(max_delivery_attempts=attempts, ack_deadline_s=60)
