"""Request reporting for connectors that own an aiohttp session (GCS, Azure): an aiohttp
``TraceConfig`` that tells the context's request observer (``connectors.base.observing``) of
every request the session sends, whichever library builds the request.

Each HTTP request that reached the wire counts once, redirects and SDK retries included (the
store sees each of them); a request that failed before its headers were sent does not. The
bytes sent are the request's body as written; the bytes received, the declared length of a
successful GET's body (an object's bytes, whole or one range).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace

import aiohttp
from yarl import URL

from connectors.base import RequestClass, StoreRequest, report_request

#: How a store's API names its requests: (method, URL, request headers) -> class, or None for
#: a request that is not one to the store (a credentials token, say), which is not reported.
Classifier = Callable[[str, URL, Mapping[str, str]], RequestClass | None]


def request_tracing(location: str, classify: Classifier) -> aiohttp.TraceConfig:
    """A trace config for a store's session reporting each request at ``location``."""

    async def start(
        _: aiohttp.ClientSession, ctx: SimpleNamespace, __: aiohttp.TraceRequestStartParams
    ) -> None:
        ctx.requests = 0
        ctx.sent = 0
        ctx.kind = None

    async def headers_sent(
        _: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        ctx.requests += 1
        ctx.kind = classify(params.method, params.url, params.headers)

    async def chunk_sent(
        _: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestChunkSentParams,
    ) -> None:
        ctx.sent += len(params.chunk)

    async def end(
        _: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        kind = ctx.kind
        if kind is None:
            return
        received = 0
        if kind is RequestClass.GET and 200 <= params.response.status < 300:
            received = params.response.content_length or 0
        _report(kind, ctx, received)

    async def failed(
        _: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        if ctx.requests and ctx.kind is not None:
            _report(ctx.kind, ctx, 0)

    def _report(kind: RequestClass, ctx: SimpleNamespace, received: int) -> None:
        report_request(
            StoreRequest(
                location, kind, bytes_sent=ctx.sent, bytes_received=received, requests=ctx.requests
            )
        )

    config = aiohttp.TraceConfig()
    config.on_request_start.append(start)
    config.on_request_headers_sent.append(headers_sent)
    config.on_request_chunk_sent.append(chunk_sent)
    config.on_request_end.append(end)
    config.on_request_exception.append(failed)
    return config
