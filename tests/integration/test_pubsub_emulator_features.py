"""What Google's Pub/Sub emulator does with each feature that lastseen's Pub/Sub broker would use.

Each test asserts what the emulator does. Where it differs from the service, or cannot show the
service's behaviour, the docstring says so: "not implemented by the emulator: only the service can
prove X". The findings are tabulated in docs/pubsub.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from google.api_core import exceptions
from google.cloud.pubsub_v1 import types
from google.protobuf import duration_pb2
from google.pubsub_v1 import ReceivedMessage

from tests.support.pubsub_clients import EmulatorNames, emulator_names
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ACK_DEADLINE_S = 10  # the smallest the service accepts


@pytest.fixture
def pubsub(pubsub_emulator: str) -> Iterator[EmulatorNames]:
    ordered = types.PublisherOptions(enable_message_ordering=True)
    with emulator_names(pubsub_emulator, publisher_options=ordered) as names:
        yield names


def pull(names: EmulatorNames, subscription: str, wait_s: float) -> list[ReceivedMessage]:
    """One unary pull; the emulator holds it open until a message arrives or ``wait_s`` passes."""
    try:
        answer = names.subscriber.pull(
            request={"subscription": subscription, "max_messages": 100}, timeout=wait_s
        )
    except exceptions.DeadlineExceeded:
        return []
    return list(answer.received_messages)


def pull_at_least(
    names: EmulatorNames, subscription: str, count: int, timeout: float
) -> list[ReceivedMessage]:
    received: list[ReceivedMessage] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        received += pull(names, subscription, wait_s=max(0.5, deadline - time.monotonic()))
    assert len(received) >= count, f"{len(received)} of {count} within {timeout}s"
    return received


def nack(names: EmulatorNames, subscription: str, message: ReceivedMessage) -> None:
    names.subscriber.modify_ack_deadline(
        request={
            "subscription": subscription,
            "ack_ids": [message.ack_id],
            "ack_deadline_seconds": 0,
        }
    )


def seconds(value: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(value))


def test_creating_what_exists_raises_already_exists(pubsub: EmulatorNames) -> None:
    """Start-up can create the topology idempotently: create, and take AlreadyExists as done."""
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic)

    with pytest.raises(exceptions.AlreadyExists):
        pubsub.publisher.create_topic(name=topic)
    with pytest.raises(exceptions.AlreadyExists):
        pubsub.subscriber.create_subscription(name=subscription, topic=topic)
    with pytest.raises(exceptions.NotFound):
        pubsub.subscription(f"{topic}-missing".replace("/topics/", "/topics/x"), suffix="orphan")


def test_publish_returns_a_message_id_per_message(pubsub: EmulatorNames) -> None:
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic)

    futures = [pubsub.publisher.publish(topic, f"m{i}".encode(), n=str(i)) for i in range(3)]
    ids = [future.result(timeout=10) for future in futures]

    assert len(set(ids)) == 3 and all(ids)
    received = pull_at_least(pubsub, subscription, 3, timeout=10)
    assert {
        (m.message.message_id, m.message.data, m.message.attributes["n"]) for m in received
    } == {(ids[i], f"m{i}".encode(), str(i)) for i in range(3)}


def test_streaming_pull_holds_at_most_max_messages_outstanding(pubsub: EmulatorNames) -> None:
    """Flow control is the client's (google-cloud-pubsub holds the surplus, leased, in memory):
    the emulator proves the client's bound, which the service would see the same way."""
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic)
    for future in [pubsub.publisher.publish(topic, str(i).encode()) for i in range(40)]:
        future.result(timeout=10)
    lock = threading.Lock()
    held: list[object] = []
    seen: list[bytes] = []
    peak = 0
    over_limit = threading.Event()

    def hold(message: types.PubsubMessage) -> None:
        nonlocal peak
        with lock:
            held.append(message)
            seen.append(message.data)
            peak = max(peak, len(held))
            if len(held) > 5:
                over_limit.set()

    streaming = pubsub.subscriber.subscribe(
        subscription, hold, flow_control=types.FlowControl(max_messages=5)
    )
    try:
        wait_until(lambda: len(held) == 5, timeout=10, what="5 messages held")
        # nothing more may arrive while the 5 are held: an observation window, not a hope
        assert not over_limit.wait(2.0)

        def ack_held() -> bool:
            with lock:
                for message in held:
                    message.ack()  # type: ignore[attr-defined]
                held.clear()
                return len(seen) == 40

        wait_until(ack_held, timeout=30, what="all 40 delivered")
    finally:
        streaming.cancel()
        streaming.result(timeout=10)
    assert peak == 5
    assert sorted(seen) == sorted(str(i).encode() for i in range(40))


def test_an_unacked_message_comes_back_after_its_ack_deadline(pubsub: EmulatorNames) -> None:
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic, ack_deadline_seconds=ACK_DEADLINE_S)
    pubsub.publisher.publish(topic, b"late").result(timeout=10)
    [first] = pull_at_least(pubsub, subscription, 1, timeout=10)
    taken = time.monotonic()

    [again] = pull_at_least(pubsub, subscription, 1, timeout=ACK_DEADLINE_S + 10)

    assert again.message.message_id == first.message.message_id
    assert time.monotonic() - taken >= ACK_DEADLINE_S - 0.5
    # without a dead-letter policy there is no delivery count
    assert first.delivery_attempt == again.delivery_attempt == 0


def test_modify_ack_deadline_extends_the_lease(pubsub: EmulatorNames) -> None:
    """A lease extended every 2 s holds the message past its 10 s deadline; once extending stops,
    it comes back one deadline after the last extension."""
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic, ack_deadline_seconds=ACK_DEADLINE_S)
    pubsub.publisher.publish(topic, b"leased").result(timeout=10)
    [message] = pull_at_least(pubsub, subscription, 1, timeout=10)
    redelivered: list[ReceivedMessage] = []
    watcher = threading.Thread(
        target=lambda: redelivered.extend(pull_at_least(pubsub, subscription, 1, timeout=45))
    )
    watcher.start()

    extended_until = time.monotonic() + 1.5 * ACK_DEADLINE_S
    while time.monotonic() < extended_until:
        pubsub.subscriber.modify_ack_deadline(
            request={
                "subscription": subscription,
                "ack_ids": [message.ack_id],
                "ack_deadline_seconds": ACK_DEADLINE_S,
            }
        )
        assert not redelivered, "redelivered while its lease was being extended"
        time.sleep(2)  # the extension interval (well inside the deadline), not a wait for work
    last_extension = time.monotonic() - 2

    watcher.join(timeout=ACK_DEADLINE_S + 20)
    assert [m.message.message_id for m in redelivered] == [message.message.message_id]
    assert time.monotonic() - last_extension >= ACK_DEADLINE_S - 0.5


def test_dead_letter_after_max_delivery_attempts(pubsub: EmulatorNames) -> None:
    """Each delivery carries its attempt number; after the 5th nack the message is published to
    the dead-letter topic with its source and delivery count as attributes. Observed: the emulator
    moves it only when the subscription is pulled again (a consumer always is). The service also
    needs its service agent granted publisher/subscriber roles for this: not implemented by the
    emulator (no IAM): only the service can prove the IAM part."""
    topic = pubsub.topic()
    dead_topic = pubsub.topic("dead")
    dead = pubsub.subscription(dead_topic, suffix="dead")
    policy = {"dead_letter_topic": dead_topic, "max_delivery_attempts": 5}
    subscription = pubsub.subscription(topic, dead_letter_policy=policy)
    pubsub.publisher.publish(topic, b"poison", origin="test").result(timeout=10)

    attempts = []
    for _ in range(5):
        [message] = pull_at_least(pubsub, subscription, 1, timeout=15)
        attempts.append(message.delivery_attempt)
        nack(pubsub, subscription, message)

    assert attempts == [1, 2, 3, 4, 5]
    assert pull(pubsub, subscription, wait_s=2) == []
    [dead_letter] = pull_at_least(pubsub, dead, 1, timeout=15)
    assert dead_letter.message.data == b"poison"
    assert dead_letter.message.attributes["origin"] == "test"
    assert dead_letter.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert dead_letter.message.attributes["CloudPubSubDeadLetterSourceSubscription"].endswith(
        subscription.rsplit("/", 1)[1]
    )


def test_retry_policy_spaces_redeliveries(pubsub: EmulatorNames) -> None:
    """Observed: the first nack is redelivered at once; later ones wait between minimum_backoff and
    maximum_backoff (on a timer of about a second). The service documents an exponential backoff
    between the bounds from the first nack: not implemented by the emulator as the service does it:
    only the service can prove its schedule."""
    topic = pubsub.topic()
    policy = {"minimum_backoff": seconds(2), "maximum_backoff": seconds(4)}
    subscription = pubsub.subscription(topic, retry_policy=policy)
    pubsub.publisher.publish(topic, b"retry").result(timeout=10)

    gaps = []
    [message] = pull_at_least(pubsub, subscription, 1, timeout=10)
    for _ in range(4):
        nacked = time.monotonic()
        nack(pubsub, subscription, message)
        [message] = pull_at_least(pubsub, subscription, 1, timeout=15)
        gaps.append(time.monotonic() - nacked)

    assert gaps[0] < 1.0, gaps
    assert all(2 - 0.5 <= gap <= 4 + 1.5 for gap in gaps[1:]), gaps


def test_ordering_key_keeps_publish_order(pubsub: EmulatorNames) -> None:
    """Messages of one key arrive in publish order on an ordered subscription. Observed: a nacked
    message is redelivered alone; the service also redelivers the key's later messages: not
    implemented by the emulator: only the service can prove that redelivery rule."""
    topic = pubsub.topic()
    subscription = pubsub.subscription(topic, enable_message_ordering=True)
    for i in range(20):
        for key in ("a", "b"):
            pubsub.publisher.publish(topic, str(i).encode(), ordering_key=key).result(timeout=10)

    received = pull_at_least(pubsub, subscription, 40, timeout=15)
    for key in ("a", "b"):
        in_order = [int(m.message.data) for m in received if m.message.ordering_key == key]
        assert in_order == list(range(20))

    nack(pubsub, subscription, received[4])
    pubsub.subscriber.acknowledge(
        subscription=subscription, ack_ids=[m.ack_id for m in received if m is not received[4]]
    )
    redelivered = pull_at_least(pubsub, subscription, 1, timeout=10)
    redelivered += pull(pubsub, subscription, wait_s=2)
    assert [m.message.message_id for m in redelivered] == [received[4].message.message_id]


def test_exactly_once_refuses_a_stale_ack_id(pubsub: EmulatorNames) -> None:
    """With exactly-once delivery, an ack id of an expired delivery is refused
    (EXACTLY_ONCE_ACKID_FAILURE) and the current one is accepted. The emulator is one process in
    memory: only the service can prove exactly-once across its regions and restarts."""
    topic = pubsub.topic()
    subscription = pubsub.subscription(
        topic, ack_deadline_seconds=ACK_DEADLINE_S, enable_exactly_once_delivery=True
    )
    assert pubsub.subscriber.get_subscription(
        subscription=subscription
    ).enable_exactly_once_delivery
    pubsub.publisher.publish(topic, b"once").result(timeout=10)
    [expired] = pull_at_least(pubsub, subscription, 1, timeout=10)
    [current] = pull_at_least(pubsub, subscription, 1, timeout=ACK_DEADLINE_S + 10)
    assert current.message.message_id == expired.message.message_id

    with pytest.raises(exceptions.InvalidArgument) as refused:
        pubsub.subscriber.acknowledge(subscription=subscription, ack_ids=[expired.ack_id])
    assert "EXACTLY_ONCE_ACKID_FAILURE" in str(refused.value)
    pubsub.subscriber.acknowledge(subscription=subscription, ack_ids=[current.ack_id])
