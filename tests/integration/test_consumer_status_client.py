"""Both status clients (``STATUS_CLIENT=httptools``, the default, and ``standard``, the
``aiohttp.ClientSession`` reference it is held to) at the HTTP level, against a scripted raw TCP
server: what goes on the wire, when a connection is reused, and what an answer that cannot be
parsed or a closed keep-alive connection becomes. Every test runs against each client, on asyncio's
own loop and on uvloop (the loop every service runs on: its transports are not
``asyncio.Transport`` subclasses, which once broke the httptools client there alone; the loops come
from ``pytest_asyncio_loop_factories`` in ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from consumer.status import StatusFailure
from consumer.status_httptools import HttptoolsStatusClient
from consumer.status_standard import StandardStatusClient
from tests.support.certificates import CertificateAuthority
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def answer(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def online(object_id: int) -> bytes:
    return answer(
        b'{"id":%d,"online":%s}' % (object_id, b"true" if object_id % 2 == 0 else b"false")
    )


class RawServer:
    """Answers each request head with the next scripted bytes (``None``: close the connection
    without answering); ``close_after`` closes a connection after that many answers, and counts
    in ``seen_closed`` those the client then closed too."""

    def __init__(self, script: list[bytes | None], close_after: int = 0) -> None:
        self.script = script
        self.close_after = close_after
        self.heads: list[bytes] = []
        self.connections = 0
        self.seen_closed = 0
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self, tls: ssl.SSLContext | None = None) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        port = self._server.sockets[0].getsockname()[1]
        # The certificate names localhost; plain tests keep the address (the Host header shows it).
        self.url = f"https://localhost:{port}/base" if tls else f"http://127.0.0.1:{port}/base"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.heads.append(head)
                reply = self.script.pop(0)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
                answered += 1
                if answered == self.close_after:
                    # Half-close and wait for the client's end: once the client has closed its
                    # side, it has seen the close (a test can wait for that, not sleep).
                    writer.write_eof()
                    await reader.read()
                    self.seen_closed += 1
                    return
        finally:
            writer.close()


@pytest.fixture
async def servers() -> AsyncIterator[list[RawServer]]:
    started: list[RawServer] = []
    yield started
    for server in started:
        await server.stop()


async def serve(
    servers: list[RawServer],
    script: list[bytes | None],
    close_after: int = 0,
    tls: ssl.SSLContext | None = None,
) -> RawServer:
    server = await RawServer(script, close_after).start(tls)
    servers.append(server)
    return server


Client = StandardStatusClient | HttptoolsStatusClient


@pytest.fixture(
    params=[StandardStatusClient, HttptoolsStatusClient],
    ids=["standard", "httptools"],
)
def client(request: pytest.FixtureRequest) -> Callable[[RawServer], Client]:
    """The client under test, for a server: each test runs once per ``STATUS_CLIENT``."""
    kind: type[Client] = request.param

    def make(server: RawServer) -> Client:
        return kind(server.url, max_connections=4, timeout=2.0)

    return make


async def test_one_get_per_lookup_on_a_kept_alive_connection(
    servers: list[RawServer], client: Callable[[RawServer], Client]
) -> None:
    server = await serve(servers, [online(42), online(7), online(10**12)])
    async with client(server) as status:
        assert await status.lookup(42) is True
        assert await status.lookup(7) is False
        assert await status.lookup(10**12) is True
    assert server.connections == 1
    port = server.url.split(":")[2].split("/")[0]
    assert (
        server.heads[0]
        == (
            f"GET /base/objects/42 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n\r\n"
        ).encode()
    )
    assert server.heads[2].startswith(b"GET /base/objects/1000000000000 HTTP/1.1\r\n")


async def test_an_informational_answer_is_skipped(
    servers: list[RawServer], client: Callable[[RawServer], Client]
) -> None:
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    server = await serve(servers, [early_hints + online(8), online(9)])
    async with client(server) as status:
        assert await status.lookup(8) is True
        assert await status.lookup(9) is False
    assert server.connections == 1


async def test_connection_close_and_an_unread_body_are_not_reused(
    servers: list[RawServer], client: Callable[[RawServer], Client]
) -> None:
    server = await serve(
        servers,
        [
            answer(b'{"id":2,"online":true}', extra="Connection: close\r\n"),
            # Refused for its announced length while most of it is still to come: the rest
            # would be read as the next answer on a reused connection.
            answer(b"x" * 5000)[:200],
            online(4),
        ],
    )
    async with client(server) as status:
        assert await status.lookup(2) is True
        with pytest.raises(StatusFailure, match="bad body: 5000 bytes"):
            await status.lookup(3)
        assert await status.lookup(4) is True
    assert server.connections == 3


async def test_a_kept_alive_connection_closed_by_the_server_is_sent_again(
    servers: list[RawServer], client: Callable[[RawServer], Client]
) -> None:
    # The keep-alive race: the server closes a kept-alive connection as the next request
    # arrives on it. That request is sent once more, on a new connection.
    server = await serve(servers, [online(2), None, online(4)])
    async with client(server) as status:
        assert await status.lookup(2) is True
        assert await status.lookup(4) is True
    assert server.connections == 2
    assert [head.split(b" ")[1] for head in server.heads] == [
        b"/base/objects/2",
        b"/base/objects/4",
        b"/base/objects/4",
    ]

    # Closed while idle in the pool: not used again. Had the request been written on it, the
    # failure would have spent the one resend on the next connection, which the server drops:
    # the lookup would fail. Not written there, the dropped one is the first try, and the
    # resend on a third connection answers.
    idle = await serve(servers, [online(2), None, online(4)], close_after=1)
    async with client(idle) as status:
        assert await status.lookup(2) is True
        await eventually(lambda: idle.seen_closed == 1, timeout=5, what="the client saw the close")
        assert await status.lookup(4) is True
    assert idle.connections == 3
    assert len(idle.heads) == 3

    # Closed without an answer on a fresh connection too: a failure after one resend, no loop.
    dropping = await serve(servers, [None, None, None])
    async with client(dropping) as status:
        with pytest.raises(StatusFailure, match="connection lost"):
            await status.lookup(6)
    assert dropping.connections == 2


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"HTTP/1.1 abc\r\n\r\n", "http error"),
        (b"not http at all\r\n\r\n", "http error"),
        (answer(b"oops", status="503 Service Unavailable"), "http 503"),
        (answer(b'{"id":8,"online":"yes"}'), "online is not a boolean"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n{}", "connection lost|http error"),
    ],
)
async def test_unusable_answers_fail_with_a_reason(
    servers: list[RawServer], client: Callable[[RawServer], Client], reply: bytes, reason: str
) -> None:
    server = await serve(servers, [reply, None], close_after=1)
    async with client(server) as status:
        with pytest.raises(StatusFailure, match=reason):
            await status.lookup(8)


@pytest.fixture
def tls_server_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context with a certificate for ``localhost`` from a CA of the test's own, which
    the httptools client trusts through ``SSL_CERT_FILE`` (read by ``ssl.create_default_context``
    when it is built). Only that client is tested here: TLS is its own code, while the aiohttp
    client uses aiohttp's, whose default context is built once at import (before a test could
    point it at a CA)."""
    authority = CertificateAuthority()
    issued = authority.issue(tmp_path, "status", ["localhost"])
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.write_ca(tmp_path / "ca.pem")))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    return context


async def test_the_httptools_client_verifies_and_speaks_https(
    servers: list[RawServer],
    tls_server_context: ssl.SSLContext,
) -> None:
    server = await serve(servers, [online(2), online(3)], tls=tls_server_context)
    async with HttptoolsStatusClient(server.url, max_connections=4, timeout=2.0) as status:
        assert await status.lookup(2) is True
        assert await status.lookup(3) is False
    assert server.connections == 1
    assert server.heads[0].startswith(b"GET /base/objects/2 HTTP/1.1\r\n")


async def test_the_httptools_client_refuses_an_untrusted_certificate(
    servers: list[RawServer],
    tls_server_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server = await serve(servers, [online(2)], tls=tls_server_context)
    monkeypatch.setenv(
        "SSL_CERT_FILE", str(CertificateAuthority("other").write_ca(tmp_path / "o.pem"))
    )
    async with HttptoolsStatusClient(server.url, max_connections=4, timeout=2.0) as status:
        with pytest.raises(StatusFailure):
            await status.lookup(2)
    assert server.heads == []


async def test_a_host_that_does_not_resolve_fails_the_lookup(
    client: Callable[[RawServer], Client],
) -> None:
    nowhere = RawServer([])
    nowhere.url = "http://no-such-status-api.invalid:9010/base"
    async with client(nowhere) as status:
        with pytest.raises(StatusFailure):
            await status.lookup(1)


async def test_the_httptools_client_keeps_the_last_addresses_while_the_resolver_fails(
    servers: list[RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every new connection asks the resolver again (TTL 0 here); once it fails, the client
    connects to the address it found before instead of failing the lookup."""
    from consumer import status_httptools

    monkeypatch.setattr(status_httptools, "DNS_TTL", 0.0)
    server = await serve(servers, [online(2), online(4)], close_after=1)
    server.url = server.url.replace("127.0.0.1", "localhost")
    async with HttptoolsStatusClient(server.url, max_connections=4, timeout=2.0) as status:
        assert await status.lookup(2) is True
        await eventually(lambda: server.seen_closed == 1, timeout=5)
        loop = asyncio.get_running_loop()

        async def resolver_away(*args: object, **kwargs: object) -> None:
            raise OSError("resolver away")

        monkeypatch.setattr(loop, "getaddrinfo", resolver_away)
        assert await status.lookup(4) is True
    assert server.connections == 2


async def test_a_client_is_ready_when_built_and_leaves_no_task_when_closed(
    servers: list[RawServer], client: Callable[[RawServer], Client]
) -> None:
    server = await serve(servers, [online(2)])
    before = asyncio.all_tasks()
    status = client(server)
    assert await status.lookup(2) is True  # no second step between building and using
    await status.close()
    await status.close()  # closing twice is harmless
    # Only the server's side of the connection may still be winding down.
    left = [task.get_coro() for task in asyncio.all_tasks() - before]
    assert [getattr(coro, "__qualname__", coro) for coro in left] in ([], ["RawServer._serve"])


async def test_a_url_the_httptools_client_cannot_speak_starts_nothing() -> None:
    before = asyncio.all_tasks()
    with pytest.raises(ValueError, match="http:// and https:// only"):
        HttptoolsStatusClient("ftp://status/base", max_connections=4, timeout=2.0)
    assert asyncio.all_tasks() == before
