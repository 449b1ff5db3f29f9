"""The aiohttp session and azure-core transport an AzureStore's requests go through,
and the class of each request for cost accounting."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from typing import Any

import aiohttp
import yarl
from azure.core.pipeline.transport import AioHttpTransport

from connectors.base import RequestClass
from connectors.observed import request_tracing
from connectors.payload import sliced

_POOL_CONNECTIONS = 128
_CONNECT_TIMEOUT_S = 10
_READ_TIMEOUT_S = 120
_DATA_BLOCK = 256 * 1024


def _proxy_in_environment() -> bool:
    """Whether the environment names an HTTP(S) proxy (HTTP_PROXY, HTTPS_PROXY, ...)."""
    return any(scheme in ("http", "https") for scheme in urllib.request.getproxies())


def request_class(method: str, url: yarl.URL, headers: Mapping[str, str]) -> RequestClass:
    """A Blob service request as Azure bills it (``connectors.base.RequestClass``)."""
    comp = url.query.get("comp")
    if method == "DELETE":
        return RequestClass.DELETE
    if method == "HEAD":
        return RequestClass.HEAD
    if method == "GET":
        if comp in ("list", "blocklist"):
            return RequestClass.LIST
        if comp is not None or url.query.get("restype") == "container":
            return RequestClass.HEAD  # properties or metadata of a container or a blob
        return RequestClass.GET
    if "x-ms-copy-source" in {name.lower() for name in headers}:
        return RequestClass.COPY  # Copy Blob, Put Block From URL
    return RequestClass.PUT


# azure-core exports AioHttpTransport through a lazy module __getattr__, so mypy sees Any.
class Transport(AioHttpTransport):  # type: ignore[misc]
    """Large bytes-like bodies go out in slices of the caller's buffer (connectors.payload),
    never copied whole; the payload is reusable, so SDK retries still work."""

    def _get_request_data(self, request: Any) -> Any:
        return sliced(super()._get_request_data(request))


def new_session() -> aiohttp.ClientSession:
    """The one session every request of a store goes through, its requests reported for
    cost accounting (connectors.observed)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=_POOL_CONNECTIONS),
        trace_configs=[request_tracing("az", request_class)],
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        # The environment's proxy settings are honoured as the SDK's own
        # transport does, but only when it names a proxy: aiohttp's trust_env
        # looks up the proxy and netrc in a worker thread on every request,
        # which costs a small blob's copy more CPU than its bytes.
        trust_env=_proxy_in_environment(),
    )


def new_transport(session: aiohttp.ClientSession) -> Transport:
    return Transport(
        session=session,
        session_owner=False,
        connection_timeout=_CONNECT_TIMEOUT_S,
        read_timeout=_READ_TIMEOUT_S,
        # The SDK sets 256 KiB on transports it builds; azure-core's default is 4 KiB.
        connection_data_block_size=_DATA_BLOCK,
    )
