"""The producer's seams, read from its source: no import loop, library internals in one module,
and HTTP code that sees only the narrow view of the core."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PRODUCER = ROOT / "producer"
SERVICE_PACKAGES = ("common", "producer", "consumer", "routine", "tester", "liveview")
PIPELINE = PRODUCER / "pipeline.py"
# A name Python mangled from ``__name`` inside a class: ``_Connection__connection_unblocked``.
MANGLED = re.compile(r"^_[A-Za-z]\w*__\w+$")
BROKER_LIBRARIES = {"aiormq", "pamqp", "aio_pika"}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imported_modules(tree: ast.AST) -> set[str]:
    """Every module an import names, wherever the import stands (a function body too)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _producer_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PRODUCER.glob("*.py")}
    return {
        name: _imported_modules(ast.parse(path.read_text())) & modules.keys() - {name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module → modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            if (cycle := visit(imported, [*path, module])) is not None:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        if (cycle := visit(module, [])) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_loop() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_loop_in_the_producer() -> None:
    graph = _producer_graph()
    assert "producer.confirms" in graph["producer.pipeline"]  # the scan sees imports
    assert _cycle(graph) is None


def _own_private_names(tree: ast.AST) -> set[str]:
    """Underscore names a module defines itself: its functions and methods, and the attributes
    its classes set on ``self`` (a classmethod may call them on the instance it builds)."""
    names = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    names.update(
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    )
    return {name for name in names if name.startswith("_")}


def _private_reads(path: Path) -> list[str]:
    """Name-mangled attributes (read directly or through getattr's string), and, in a module
    that imports a broker library, underscore attributes the module does not define itself."""
    tree = ast.parse(path.read_text())
    libraries = {name.split(".")[0] for name in _imported_modules(tree)} & BROKER_LIBRARIES
    own = _own_private_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and MANGLED.match(node.attr):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if MANGLED.match(node.value):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
        elif (
            libraries
            and isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr not in own
        ):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_scan_finds_the_pipelines_private_read(tmp_path: Path) -> None:
    assert any("_Connection__connection_unblocked" in read for read in _private_reads(PIPELINE))
    reader = tmp_path / "reader.py"
    reader.write_text(
        "import aiormq\n"
        "class Own:\n"
        "    def _mine(self) -> None: ...\n"
        "def read(channel: aiormq.Channel, own: Own) -> object:\n"
        "    own._mine()\n"
        "    return channel._writer\n"
    )
    assert _private_reads(reader) == ["reader.py:6: channel._writer"]


def test_no_broker_library_internals_outside_the_pipeline() -> None:
    found = [
        read
        for package in SERVICE_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != PIPELINE
        for read in _private_reads(path)
    ]
    assert found == []


def test_tests_and_benchmarks_read_no_name_mangled_internals_either() -> None:
    """A broker frame a test needs is sent on the wire (tests/support/amqp_proxy.py)."""
    this = Path(__file__).resolve()
    found = [
        f"{path.relative_to(ROOT)}: {node.lineno}"
        for folder in ("tests", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != this
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Attribute) and MANGLED.match(node.attr))
        or (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MANGLED.match(node.value)
        )
    ]
    assert found == []


def test_only_the_pipeline_imports_aiormq_in_the_producer() -> None:
    importers = {
        path.name
        for path in PRODUCER.glob("*.py")
        if any(
            name.split(".")[0] == "aiormq"
            for name in _imported_modules(ast.parse(path.read_text()))
        )
    }
    assert importers == {"pipeline.py"}


@pytest.mark.parametrize("http_module", ["api", "callback_endpoint", "schemas"])
def test_http_code_sees_the_view_not_the_parts(http_module: str) -> None:
    imported = _imported_modules(ast.parse((PRODUCER / f"{http_module}.py").read_text()))
    parts = {
        "producer.publisher",
        "producer.relay",
        "producer.ingest",
        "producer.service",
        "producer.settings",
        "producer.confirms",
        "producer.spool",  # even its error: producer.view.SpoolUnavailable
    }
    assert {name for name in imported if name.rsplit(".", 1)[0] in parts or name in parts} == set()


def _broker_comparisons(tree: ast.AST) -> list[int]:
    """Lines comparing something called ``broker`` (``settings.broker == …``)."""

    def is_broker(node: ast.expr) -> bool:
        return (isinstance(node, ast.Name) and node.id == "broker") or (
            isinstance(node, ast.Attribute) and node.attr == "broker"
        )

    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and any(map(is_broker, [node.left, *node.comparators]))
    ]


def test_the_broker_is_chosen_once_in_the_service() -> None:
    assert _broker_comparisons(ast.parse("if settings.broker == 'pubsub': pass")) == [1]
    chosen = {
        path.name: lines
        for path in PRODUCER.glob("*.py")
        if (lines := _broker_comparisons(ast.parse(path.read_text())))
    }
    assert chosen.keys() == {"service.py"}, chosen
    assert len(chosen["service.py"]) == 1


def test_the_default_broker_loads_no_google_client() -> None:
    """With BROKER=rabbitmq, importing the producer and building its broker imports neither
    Google's client nor gRPC (~0.1 s of start-up and their threads, for nothing)."""
    script = (
        "import sys\n"
        "import producer.__main__\n"
        "from producer.service import broker_for\n"
        "from producer.settings import ProducerSettings\n"
        "settings = ProducerSettings(_env_file=None, amqp_uri='amqp://x/', queue_name='q')\n"
        "print(type(broker_for(settings)).__name__)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER", "PUBSUB_"))}
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["Publisher", "[]"], result.stdout + result.stderr
