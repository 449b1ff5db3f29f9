"""What every test proxy in front of an emulator shares (the fault proxy of ``tests/chaos``
and the counting proxy of ``tests/costs``): an aiohttp server forwarding each request to one
upstream as it came (hop-by-hop headers dropped, the body as sent, no decompression), and the
answer back with redirects naming the upstream rewritten to the proxy, so a client never
leaves it. Subclasses decide what happens around the forwarding in ``handle``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Self

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class ForwardingProxy:
    """``await start()`` returns its URL (also ``url``); ``close()`` stops it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One request; by default forwarded unchanged."""
        body = await request.read()
        status, headers, payload = await self.forward(request, body)
        return await self.answer(request, status, headers, payload)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120),
        )
        app = web.Application(client_max_size=1 << 31)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=512)
        await site.start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, CIMultiDict[str], bytes]:
        """Send ``request`` with ``body`` upstream: its status, headers and whole body
        (aiohttp.ClientError or TimeoutError if the upstream fails)."""
        assert self._session is not None, "the proxy is not started"
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() != "accept-encoding"
        }
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            # A buffer, not bytes: aiohttp warns about large bytes bodies (an error under the
            # test suite's warning filter).
            data=io.BytesIO(body) if body else (b"" if request.can_read_body else None),
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        ) as upstream:
            payload = await upstream.read()
            return upstream.status, upstream.headers.copy(), payload

    def response(self, status: int, headers: CIMultiDict[str]) -> web.StreamResponse:
        """The answer's status and headers, before its body."""
        response = web.StreamResponse(status=status)
        for name, value in headers.items():
            lowered = name.lower()
            if lowered in HOP_BY_HOP:
                continue
            if lowered == "location":
                value = value.replace(self.upstream, self.url)
            response.headers.add(name, value)
        return response

    async def answer(
        self, request: web.Request, status: int, headers: CIMultiDict[str], payload: bytes
    ) -> web.StreamResponse:
        """Send the upstream's answer back whole."""
        response = self.response(status, headers)
        if request.method == "HEAD" or status in (204, 304):
            if request.method == "HEAD" and "Content-Length" in headers:
                response.content_length = int(headers["Content-Length"])
            await response.prepare(request)
            await response.write_eof()
            return response
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload)
        await response.write_eof()
        return response


Answer = tuple[int, CIMultiDict[str], bytes]


class RecordingProxy(ForwardingProxy):
    """Forwards to the emulator and records each request's method and User-Agent; ``alter``
    may change an answer before it goes back."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.seen: list[tuple[str, str]] = []
        self.alter: Callable[[web.Request, Answer], Answer] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.headers.get("User-Agent", "")))
        answer = await self.forward(request, await request.read())
        if self.alter is not None:
            answer = self.alter(request, answer)
        return await self.answer(request, *answer)


def flip_a_read_byte(request: web.Request, answer: Answer) -> Answer:
    """An ``alter`` damaging one byte (the 101st) of every GET's body on its way back."""
    status, headers, body = answer
    if request.method != "GET":
        return answer
    return status, headers, body[:100] + bytes([body[100] ^ 1]) + body[101:]
