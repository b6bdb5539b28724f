"""Where the consumer's CPU goes: a py-spy sampling profile, summed by layer and by function.

``py-spy record --format raw`` writes one line per distinct stack, ``frame;frame;… count``, each
frame ``function (path:line)``, outermost first. With ``--native`` py-spy cannot tell a thread
waiting in ``epoll_wait`` from a running one, so a sample whose innermost frame is libuv's
``uv__io_poll`` (or ``epoll_wait`` itself) counts as idle and is left out of the shares: the rest
is CPU time (the report compares its sum with the process's measured CPU). Each sample is charged
to one *layer*: the innermost frame that belongs to a known library or to our code decides (so time
in aiohttp called from the consumer counts as HTTP client, and the consumer's own Python counts as
consumer code). With ``--native`` the C frames of uvloop and libuv are named too; interpreter
internals (``Py_DECREF`` …) match no layer and are charged to the frame that called them.

    python -m bench.profile_summary PROFILE.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Checked in order, innermost frame first; the first match names the layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HTTP client (aiohttp, yarl, multidict)", ("aiohttp/", "yarl/", "multidict/")),
    ("AMQP delivery and ack (aio-pika, aiormq, pamqp)", ("aio_pika/", "aiormq/", "pamqp/")),
    ("database driver (asyncpg)", ("asyncpg/",)),
    ("logging and metrics (structlog, prometheus)", ("structlog/", "prometheus_client/")),
    ("settings and validation (pydantic)", ("pydantic", "pydantic_core")),
    ("consumer: status lookups and single-flight", ("consumer/status", "consumer/single_")),
    ("consumer: batch writer", ("consumer/batch_writer",)),
    ("consumer: worker, ledger, retries", ("consumer/",)),
    ("common: messages, db, amqp", ("common/",)),
    # Native frames (py-spy --native): libuv's poll and uvloop's compiled transports.
    ("event loop: libuv poll and dispatch (C)", ("linux.c", "core.c", "uv-common.c", "stream.c")),
    ("uvloop transports and handles (C)", ("loop.c", "uvloop/")),
    ("asyncio scheduling (Python)", ("asyncio/",)),
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*):(?P<line>\d+)\)$")


IDLE_FRAMES = ("uv__io_poll", "epoll_wait", "epoll_pwait")


@dataclass
class ProfileSummary:
    samples: int  # busy samples (idle ones left out)
    idle_samples: int
    layers: list[tuple[str, int]]  # layer, samples (self time, by innermost known frame)
    self_top: list[tuple[str, int]]  # "function (file)", samples at the top of the stack
    consumer_inclusive: list[tuple[str, int]]  # our functions, samples with them on the stack

    def share(self, count: int) -> float:
        return 100 * count / self.samples if self.samples else 0.0


def short(path: str) -> str:
    """A frame's file without the install location: ``aiohttp/streams.py``,
    ``consumer/worker.py``, ``asyncio/streams.py``."""
    for package in ("/consumer/", "/common/"):
        if package in path:
            return package[1:] + path.rsplit(package, 1)[1]
    if "site-packages/" in path:
        return path.rsplit("site-packages/", 1)[1]
    if "/lib/python3" in path:
        tail = path.rsplit("/lib/python3", 1)[1]
        return tail.split("/", 1)[1] if "/" in tail else tail
    return path


def layer_of(frames: list[tuple[str, str]]) -> str:
    for _function, path in reversed(frames):
        for name, markers in LAYERS:
            if any(marker in path for marker in markers):
                return name
    return "other (interpreter, C extensions called from the top)"


def parse(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            if match:
                frames.append((match["function"], match["path"]))
        stacks.append((frames, int(count)))
    return stacks


def summarise(text: str, top: int = 12) -> ProfileSummary:
    layers: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for frames, count in parse(text):
        if frames and frames[-1][0] in IDLE_FRAMES:
            idle += count
            continue
        total += count
        layers[layer_of(frames)] += count
        if frames:
            function, path = frames[-1]
            self_time[f"{function} ({short(path)})"] += count
        ours = {
            f"{function} ({short(path)})"
            for function, path in frames
            if "consumer/" in path or "common/" in path
        }
        for name in ours:
            inclusive[name] += count
    return ProfileSummary(
        total, idle, layers.most_common(), self_time.most_common(top), inclusive.most_common(top)
    )


def main() -> None:
    summary = summarise(Path(sys.argv[1]).read_text())
    print(f"{summary.samples} busy samples, {summary.idle_samples} idle ones left out")
    for name, count in summary.layers:
        print(f"{summary.share(count):5.1f} %  {name}")
    print("top of the stack:")
    for name, count in summary.self_top:
        print(f"{summary.share(count):5.1f} %  {name}")
    print("our functions, inclusive:")
    for name, count in summary.consumer_inclusive:
        print(f"{summary.share(count):5.1f} %  {name}")


if __name__ == "__main__":
    main()
