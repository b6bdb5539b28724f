"""Which Pub/Sub client for lastseen: Google's ``google-cloud-pubsub`` (gRPC, threads) against the
asyncio ``gcloud-aio-pubsub`` (REST, aiohttp), measured against Google's emulator.

    flock -o /tmp/lastseen-heavy.lock .venv/bin/python -m bench.pubsub_clients

For each library, in a fresh child process each time, alternating which goes first:
- publish: CPU seconds of the publishing process per message, publishing at a fixed rate and
  waiting for every message id (the producer's 202 needs them);
- consume: CPU seconds per message received and acked, while the parent publishes at that rate;
then once each: whether flow control bounds the messages outstanding in the handler, and whether a
message held past its ack deadline (while others flow) is kept from redelivery by lease extension.
The emulator runs in its own process: its CPU is not counted. The emulator is not the service (its
publish answers in about a millisecond, the service's in tens): the figures compare the clients'
own cost, not what a deployment will see.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LIBRARIES = ("google-cloud-pubsub", "gcloud-aio-pubsub")
PROJECT = "lastseen-bench"
TICK_S = 0.01


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def paced(count: int, rate: float, send: Callable[[int], None]) -> None:
    """Call ``send(k)`` every tick with the tick's share of ``count`` messages at ``rate``/s."""
    per_tick = max(1, round(rate * TICK_S))
    next_tick = time.monotonic()
    sent = 0
    while sent < count:
        batch = min(per_tick, count - sent)
        send(batch)
        sent += batch
        next_tick += TICK_S
        time.sleep(max(0.0, next_tick - time.monotonic()))  # pacing, not a wait for work


async def paced_async(count: int, rate: float, send: Callable[[int], Any]) -> None:
    per_tick = max(1, round(rate * TICK_S))
    next_tick = time.monotonic()
    sent = 0
    while sent < count:
        batch = min(per_tick, count - sent)
        send(batch)
        sent += batch
        next_tick += TICK_S
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


# ---- children: one measurement in a fresh process, JSON on stdout ----


def google_publish(topic: str, count: int, rate: float) -> dict[str, Any]:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    publisher.publish(topic, b"warm-up").result(timeout=30)
    futures: list[Any] = []
    started = cpu_seconds()
    paced(
        count,
        rate,
        lambda n: futures.extend(publisher.publish(topic, b"x" * 200) for _ in range(n)),
    )
    ids = [future.result(timeout=60) for future in futures]
    used = cpu_seconds() - started
    publisher.stop()
    return {"cpu_s": used, "messages": len(set(ids))}


async def aio_publish(topic: str, count: int, rate: float) -> dict[str, Any]:
    from gcloud.aio.pubsub import PublisherClient, PubsubMessage

    async with PublisherClient() as publisher:
        await publisher.publish(topic, [PubsubMessage(b"warm-up")])
        calls: list[asyncio.Task[dict[str, Any]]] = []

        def send(n: int) -> None:
            messages = [PubsubMessage(b"x" * 200) for _ in range(n)]
            calls.append(asyncio.ensure_future(publisher.publish(topic, messages)))

        started = cpu_seconds()
        await paced_async(count, rate, send)
        answers = await asyncio.gather(*calls)
        used = cpu_seconds() - started
    ids = {message_id for answer in answers for message_id in answer["messageIds"]}
    return {"cpu_s": used, "messages": len(ids)}


@dataclass
class Tally:
    """Deliveries seen by a consumer; the handler threads/tasks update it under a lock."""

    expected: int
    received: int = 0
    outstanding: int = 0
    peak_outstanding: int = 0
    cpu_at_first: float = 0.0
    lock: threading.Lock = threading.Lock()  # noqa: RUF009 (one per Tally: set in __post_init__)
    done: threading.Event = threading.Event()  # noqa: RUF009

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.done = threading.Event()

    def take(self) -> None:
        with self.lock:
            if self.received == 0:
                self.cpu_at_first = cpu_seconds()
            self.received += 1
            self.outstanding += 1
            self.peak_outstanding = max(self.peak_outstanding, self.outstanding)

    def release(self) -> None:
        with self.lock:
            self.outstanding -= 1
            if self.received >= self.expected and self.outstanding == 0:
                self.done.set()


def google_consume(
    subscription: str, count: int, hold_s: float, bound: int, wait_s: float
) -> dict[str, Any]:
    """Receive and ack ``count`` messages. Those whose data starts with ``hold`` are acked
    ``hold_s`` after they arrived (on a timer, so that only flow control, not the callback thread
    pool, bounds what is outstanding); the others at once."""
    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1 import types

    subscriber = pubsub_v1.SubscriberClient()
    tally = Tally(count)
    ids: dict[str, int] = {}

    def ack(message: Any) -> None:
        message.ack()
        tally.release()

    def handle(message: Any) -> None:
        with tally.lock:
            ids[message.message_id] = ids.get(message.message_id, 0) + 1
        tally.take()
        if message.data.startswith(b"hold"):
            threading.Timer(hold_s, ack, (message,)).start()
        else:
            ack(message)

    streaming = subscriber.subscribe(
        subscription, handle, flow_control=types.FlowControl(max_messages=bound)
    )
    print("ready", flush=True)
    finished = tally.done.wait(timeout=wait_s)
    used = cpu_seconds() - tally.cpu_at_first
    streaming.cancel()
    streaming.result(timeout=30)
    subscriber.close()
    return {
        "cpu_s": used,
        "messages": tally.received,
        "finished": finished,
        "peak_outstanding": tally.peak_outstanding,
        "max_deliveries": max(ids.values(), default=0),
    }


async def aio_consume(
    subscription: str, count: int, hold_s: float, bound: int, wait_s: float
) -> dict[str, Any]:
    """As :func:`google_consume`; the library's bound is its handler tasks and pull size."""
    from gcloud.aio.pubsub import SubscriberClient, SubscriberMessage, subscribe

    tally = Tally(count)
    ids: dict[str, int] = {}

    async def handle(message: SubscriberMessage) -> None:
        ids[message.message_id] = ids.get(message.message_id, 0) + 1
        tally.take()
        if message.data.startswith(b"hold"):
            await asyncio.sleep(hold_s)
        tally.release()  # the library acks when the handler returns

    async with SubscriberClient() as subscriber:
        consuming = asyncio.ensure_future(
            subscribe(
                subscription,
                handle,
                subscriber,
                max_messages_per_producer=bound,
                num_tasks_per_consumer=bound,
            )
        )
        print("ready", flush=True)
        finished = await asyncio.to_thread(tally.done.wait, wait_s)
        used = cpu_seconds() - tally.cpu_at_first
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
    return {
        "cpu_s": used,
        "messages": tally.received,
        "finished": finished,
        "peak_outstanding": tally.peak_outstanding,
        "max_deliveries": max(ids.values(), default=0),
    }


def child(args: argparse.Namespace) -> None:
    if args.library == "google-cloud-pubsub":
        if args.task == "publish":
            result = google_publish(args.path, args.count, args.rate)
        else:
            result = google_consume(args.path, args.count, args.hold, args.bound, args.wait)
    elif args.task == "publish":
        result = asyncio.run(aio_publish(args.path, args.count, args.rate))
    else:
        result = asyncio.run(aio_consume(args.path, args.count, args.hold, args.bound, args.wait))
    print(json.dumps(result), flush=True)


# ---- parent: the emulator, the topics, the schedule, the report ----


class Bench:
    def __init__(self, host: str) -> None:
        from google.cloud import pubsub_v1

        self.host = host
        self.env = {**os.environ, "PUBSUB_EMULATOR_HOST": host}
        os.environ["PUBSUB_EMULATOR_HOST"] = host  # the parent's own clients (this process only)
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()

    def topic_and_subscription(self, ack_deadline_s: int = 60) -> tuple[str, str]:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        topic = self.publisher.topic_path(PROJECT, name)
        subscription = self.subscriber.subscription_path(PROJECT, name)
        self.publisher.create_topic(name=topic)
        self.subscriber.create_subscription(
            request={"name": subscription, "topic": topic, "ack_deadline_seconds": ack_deadline_s}
        )
        return topic, subscription

    def feed(self, topic: str, count: int, rate: float, data: bytes = b"y" * 200) -> None:
        futures: list[Any] = []
        paced(count, rate, lambda n: futures.extend(self.publish(topic, data) for _ in range(n)))
        for future in futures:
            future.result(timeout=60)

    def publish(self, topic: str, data: bytes = b"y" * 200) -> Any:
        return self.publisher.publish(topic, data)

    def run_child(
        self, library: str, task: str, path: str, **options: Any
    ) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "bench.pubsub_clients", "--child", task]
        command += ["--library", library, "--path", path]
        for key, value in options.items():
            command += [f"--{key}", str(value)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=self.env)

    def publish_run(self, library: str, count: int, rate: float) -> dict[str, Any]:
        topic, _ = self.topic_and_subscription()
        process = self.run_child(library, "publish", topic, count=count, rate=rate)
        out, _ = process.communicate(timeout=300)
        return dict(json.loads(out.strip().splitlines()[-1]))

    def consume_run(
        self,
        library: str,
        count: int,
        rate: float,
        data: bytes = b"y" * 200,
        hold: float = 0.0,
        bound: int = 100,
        ack_deadline_s: int = 60,
        first: bytes = b"",
        wait: float = 120.0,
    ) -> dict[str, Any]:
        """A consumer child on a new subscription, fed ``count`` messages at ``rate`` (the first
        one ``first`` when given) once it is ready; its answer."""
        topic, subscription = self.topic_and_subscription(ack_deadline_s)
        process = self.run_child(
            library, "consume", subscription, count=count, hold=hold, bound=bound, wait=wait
        )
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{library} consumer did not start")
        if first:
            self.publish(topic, first).result(timeout=30)
        self.feed(topic, count - (1 if first else 0), rate, data)
        out, _ = process.communicate(timeout=wait + 60)
        return dict(json.loads(out.strip().splitlines()[-1]))


def versions() -> str:
    names = (*LIBRARIES, "grpcio", "protobuf", "aiohttp")
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f}  range {min(values):.1f}–{max(values):.1f}"


def parent(args: argparse.Namespace) -> None:
    from tests.support.pubsub_emulator import find_emulator, running_emulator

    # SIGTERM (timeout, a stopped session) unwinds like Ctrl-C: the emulator's folder is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    launcher = find_emulator()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"versions: {versions()}")
    print(f"emulator: {launcher.resolve()} ({next(launcher.parent.parent.glob('lib/*.jar')).name})")
    print(
        f"each run: {args.messages} messages of 200 bytes at {args.rate:.0f}/s; "
        f"{args.repeats} repeats, the libraries alternating which goes first\n"
    )
    publish_us: dict[str, list[float]] = {name: [] for name in LIBRARIES}
    consume_us: dict[str, list[float]] = {name: [] for name in LIBRARIES}
    with running_emulator(launcher) as emulator:
        bench = Bench(emulator.host)
        for repeat in range(args.repeats):
            order = LIBRARIES if repeat % 2 == 0 else LIBRARIES[::-1]
            for library in order:
                published = bench.publish_run(library, args.messages, args.rate)
                assert published["messages"] == args.messages, published
                publish_us[library].append(1e6 * published["cpu_s"] / published["messages"])
                consumed = bench.consume_run(library, args.messages, args.rate)
                assert consumed["finished"], consumed
                consume_us[library].append(1e6 * consumed["cpu_s"] / consumed["messages"])
                print(
                    f"  repeat {repeat + 1} {library}: publish {publish_us[library][-1]:.1f} µs, "
                    f"consume+ack {consume_us[library][-1]:.1f} µs CPU per message",
                    flush=True,
                )
        print("\nCPU per message (µs), client process only:")
        for library in LIBRARIES:
            samples = args.repeats * args.messages
            print(f"  {library:22} publish      {summary(publish_us[library])}  (n={samples})")
            print(f"  {library:22} consume+ack  {summary(consume_us[library])}  (n={samples})")

        print(f"\nflow control: {args.flow_messages} messages, each held 50 ms, bound 10:")
        for library in LIBRARIES:
            flow = bench.consume_run(
                library, args.flow_messages, args.rate, data=b"hold", hold=0.05, bound=10
            )
            print(
                f"  {library:22} peak outstanding {flow['peak_outstanding']} "
                f"(bounded: {flow['peak_outstanding'] <= 10}), all delivered: {flow['finished']}"
            )

        print(
            f"\nlease: one message held {args.hold:.0f} s on a 10 s ack deadline while "
            f"{args.flow_messages} others flow over half that time:"
        )
        for library in LIBRARIES:
            # the others are fed well inside the hold: the consumer is busy while the lease runs
            lease = bench.consume_run(
                library,
                args.flow_messages,
                args.flow_messages / (args.hold / 2),
                hold=args.hold,
                ack_deadline_s=10,
                first=b"hold-long",
                wait=args.hold + 15,
            )
            held = lease["max_deliveries"] == 1
            print(
                f"  {library:22} most deliveries of one message: {lease['max_deliveries']} "
                f"({'lease held' if held else 'REDELIVERED while held'})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flow-messages", type=int, default=300)
    parser.add_argument("--hold", type=float, default=25.0)
    parser.add_argument("--child", dest="task", choices=("publish", "consume"))
    parser.add_argument("--library", choices=LIBRARIES)
    parser.add_argument("--path")
    parser.add_argument("--count", type=int)
    parser.add_argument("--bound", type=int, default=100)
    parser.add_argument("--wait", type=float, default=300.0)
    args = parser.parse_args()
    if args.task:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
