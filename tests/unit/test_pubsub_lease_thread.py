"""The Pub/Sub client's lease thread raises on purpose when it gave up extending leases (it has
ended the stream, and the consumer opens a new one): while the consumer runs, that exception is
a warning; every other thread exception still reaches the hook that was there before."""

from __future__ import annotations

import threading

import pytest
import structlog
from google.api_core import exceptions

from consumer.pubsub import LEASE_THREAD, lease_thread_warnings

pytestmark = pytest.mark.unit


def raise_in_thread(name: str, error: Exception) -> None:
    def run() -> None:
        raise error

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()


def test_only_the_lease_threads_planned_exception_becomes_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before: list[tuple[str, type[BaseException]]] = []

    def previous(args: threading.ExceptHookArgs) -> None:
        assert args.thread is not None
        before.append((args.thread.name, args.exc_type))

    monkeypatch.setattr(threading, "excepthook", previous)
    gave_up = exceptions.RetryError("Timeout of 60.0s exceeded", None)
    with structlog.testing.capture_logs() as logs, lease_thread_warnings():
        raise_in_thread(LEASE_THREAD, gave_up)
        raise_in_thread(LEASE_THREAD, ValueError("a bug"))
        raise_in_thread("worker", gave_up)

    assert [entry["event"] for entry in logs] == ["pubsub_lease_thread_ended"]
    assert "Timeout of 60.0s exceeded" in logs[0]["error"]
    assert before == [(LEASE_THREAD, ValueError), ("worker", exceptions.RetryError)]
    assert threading.excepthook is previous
