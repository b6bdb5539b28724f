"""``BROKER`` and its settings, read by every service that talks to the broker: what each choice
requires, and the one line (exit 2) a bad value gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import load_settings
from consumer.replay import ReplaySettings
from consumer.settings import ConsumerSettings
from producer.settings import ProducerSettings

pytestmark = pytest.mark.unit

SERVICE_ENV = {
    ProducerSettings: {},
    ConsumerSettings: {
        "TESTER_ENDPOINT": "http://tester:9010",
        "STORE": "redis",
        "REDIS_URL": "redis://localhost:6379/0",
    },
    ReplaySettings: {},
}
PUBSUB = {"BROKER": "pubsub", "PUBSUB_PROJECT_ID": "lastseen-dev", "QUEUE_NAME": "objects"}


def load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: type, env: dict[str, str]
) -> object:
    monkeypatch.chdir(tmp_path)  # no .env here
    for name in (
        "AMQP_URI",
        "AMQP_URI_FILE",
        "BROKER",
        "PUBSUB_PROJECT_ID",
        "PUBSUB_EMULATOR_HOST",
        "QUEUE_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**SERVICE_ENV[model], **env}.items():
        monkeypatch.setenv(name, value)
    return load_settings(model, "svc")


def refusal(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: type,
    env: dict[str, str],
) -> str:
    with pytest.raises(SystemExit) as exit_:
        load(monkeypatch, tmp_path, model, env)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("model", list(SERVICE_ENV))
def test_rabbitmq_stays_the_default_and_needs_amqp_uri(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: type,
) -> None:
    settings = load(
        monkeypatch, tmp_path, model, {"AMQP_URI": "amqp://u:p@host/", "QUEUE_NAME": "q:1"}
    )
    assert settings.broker == "rabbitmq"
    err = refusal(monkeypatch, tmp_path, capsys, model, {"QUEUE_NAME": "q"})
    assert "AMQP_URI is required but not set (nor AMQP_URI_FILE)" in err


@pytest.mark.parametrize("model", list(SERVICE_ENV))
def test_pubsub_needs_no_rabbitmq_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: type
) -> None:
    settings = load(monkeypatch, tmp_path, model, PUBSUB)
    assert settings.broker == "pubsub"
    assert settings.amqp_ssl_context() is None
    topology = settings.pubsub_topology
    assert topology.work_subscription == "projects/lastseen-dev/subscriptions/objects.work"
    assert settings.pubsub.emulator_host is None


def test_the_emulator_host_is_kept_as_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {**PUBSUB, "PUBSUB_EMULATOR_HOST": "pubsub-emulator:8085"}
    settings = load(monkeypatch, tmp_path, ProducerSettings, env)
    assert settings.pubsub.emulator_host == "pubsub-emulator:8085"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BROKER": "kafka"}, "BROKER: Input should be 'rabbitmq' or 'pubsub'"),
        ({"PUBSUB_PROJECT_ID": ""}, "PUBSUB_PROJECT_ID is required with BROKER=pubsub"),
        ({"PUBSUB_PROJECT_ID": "My_Project"}, "PUBSUB_PROJECT_ID: a Google Cloud project id"),
        ({"PUBSUB_EMULATOR_HOST": "http://localhost:8085"}, "PUBSUB_EMULATOR_HOST: host:port"),
        ({"QUEUE_NAME": "q:1"}, "QUEUE_NAME: with BROKER=pubsub"),
        ({"QUEUE_NAME": "goog-objects"}, "QUEUE_NAME: with BROKER=pubsub"),
        ({"AMQP_URI": "http://host"}, "AMQP_URI: String should match pattern"),
    ],
)
@pytest.mark.parametrize("model", list(SERVICE_ENV))
def test_a_bad_broker_setting_gets_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: type,
    env: dict[str, str],
    named: str,
) -> None:
    err = refusal(monkeypatch, tmp_path, capsys, model, {**PUBSUB, **env})
    assert err.startswith("svc: configuration error: ")
    assert named in err
