"""A fault-injecting HTTP proxy in front of one emulator (moto S3 or SQS, fake-gcs-server,
Azurite).

Every request is forwarded to the upstream emulator unless the proxy decides to break it.
Decisions are drawn from one ``random.Random(seed)`` in the order requests arrive, one draw per
request, so a seed reproduces the sequence of faults for a given sequence of requests. The
faults, each with its own rate (``FaultProfile``):

* ``latency``: the request waits up to ``max_latency_s`` before it is forwarded;
* ``throttle``: answered without forwarding, in the store's own words: S3 ``503 SlowDown``,
  GCS ``429 rateLimitExceeded``, Azure ``503 ServerBusy``, SQS ``503``; with ``Retry-After``;
* ``reset_before``: the connection is reset (RST) before the request reaches the store;
* ``reset_after``: the request is applied by the store, then the connection is reset instead
  of answering (the client cannot tell whether its write landed);
* ``truncate``: the answer's headers promise the whole body, part of it is sent, then the
  connection is closed;
* ``flip_request`` / ``flip_response``: one byte of the request (or answer) body is inverted.
  With ``flip_scope = "data"`` only object data is flipped (bodies that are not JSON, XML or
  text), as corruption below a checksum would; ``"any"`` flips control bodies too.

Forwarding is ``tests/forwarding.py``'s: redirect targets (``Location``) naming the upstream
are rewritten to the proxy, so a client never leaves it. ``python -m tests.chaos.proxy`` runs
several proxies in one process with a control port (``GET /stats``, ``PUT /profile``): see
``tests/chaos/proxies.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

from tests.chaos.azure_blocks import BlockLedger
from tests.forwarding import ForwardingProxy

Flavour = Literal["s3", "sqs", "gcs", "azure"]
FaultKind = Literal[
    "none",
    "latency",
    "throttle",
    "reset_before",
    "reset_after",
    "truncate",
    "flip_request",
    "flip_response",
]
# The order in which a draw is compared with the cumulative rates: part of what a seed means.
FAULT_ORDER: tuple[FaultKind, ...] = (
    "latency",
    "throttle",
    "reset_before",
    "reset_after",
    "truncate",
    "flip_request",
    "flip_response",
)
_CONTROL_TYPES = ("json", "xml", "text/", "x-www-form-urlencoded", "multipart/")


@dataclass(frozen=True)
class FaultProfile:
    """The probability of each fault per request (they add up to the share of requests that
    are broken; latency is not a failure)."""

    latency: float = 0.0
    throttle: float = 0.0
    reset_before: float = 0.0
    reset_after: float = 0.0
    truncate: float = 0.0
    flip_request: float = 0.0
    flip_response: float = 0.0
    max_latency_s: float = 0.5
    retry_after_s: int = 1
    flip_scope: Literal["data", "any"] = "data"

    def __post_init__(self) -> None:
        total = sum(getattr(self, kind) for kind in FAULT_ORDER)
        if any(getattr(self, kind) < 0 for kind in FAULT_ORDER) or total > 1.0:
            raise ValueError(f"fault rates must be >= 0 and add up to at most 1 (got {total})")

    @property
    def failing(self) -> float:
        """The share of requests that fail (everything but latency)."""
        return sum(getattr(self, kind) for kind in FAULT_ORDER if kind != "latency")

    @classmethod
    def failing_share(cls, share: float, *, max_latency_s: float = 0.3) -> FaultProfile:
        """``share`` of requests failing, spread over every kind of failure, plus as many
        again delayed."""
        kinds = ("throttle", "reset_before", "reset_after", "truncate", "flip_request")
        weights = {"throttle": 0.4, "reset_before": 0.15, "reset_after": 0.15, "truncate": 0.15}
        rates = {kind: share * weights.get(kind, 0.0) for kind in kinds}
        rates["flip_request"] = share * 0.075
        rates["flip_response"] = share * 0.075
        return cls(latency=min(share, 1.0 - share), max_latency_s=max_latency_s, **rates)


@dataclass(frozen=True)
class Decision:
    """What the proxy did to one request (the n-th it received)."""

    number: int
    fault: FaultKind
    # Where a flip or a truncation cuts, as a fraction of the body; the latency in seconds.
    position: float
    method: str
    path: str
    # Set when the fault was forced (``FaultProxy.force``): the fault and the method it was for.
    forced: tuple[FaultKind, str | None] | None = None


@dataclass
class ProxyStats:
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    # Faults drawn that could not apply (a flip of an empty or control body): forwarded as is.
    not_applicable: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "faults": dict(self.faults),
            "not_applicable": dict(self.not_applicable),
        }


def _is_data(content_type: str) -> bool:
    lowered = content_type.lower()
    return not any(marker in lowered for marker in _CONTROL_TYPES)


def flip_byte(body: bytes, position: float) -> bytes:
    """``body`` with the byte at ``position`` (a fraction of its length) inverted."""
    index = min(len(body) - 1, int(position * len(body)))
    return body[:index] + bytes([body[index] ^ 0xFF]) + body[index + 1 :]


def _throttle_response(flavour: Flavour, retry_after_s: int) -> web.Response:
    headers = {"Retry-After": str(retry_after_s)}
    if flavour == "s3":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            "<Message>Please reduce your request rate.</Message></Error>"
        )
        return web.Response(status=503, text=body, content_type="application/xml", headers=headers)
    if flavour == "sqs":
        body = json.dumps(
            {"__type": "com.amazonaws.sqs#ServiceUnavailable", "message": "Service Unavailable"}
        )
        return web.Response(
            status=503, text=body, content_type="application/x-amz-json-1.0", headers=headers
        )
    if flavour == "gcs":
        body = json.dumps(
            {
                "error": {
                    "code": 429,
                    "message": "The rate of requests is too high.",
                    "errors": [{"reason": "rateLimitExceeded", "message": "rate limit"}],
                }
            }
        )
        return web.json_response(json.loads(body), status=429, headers=headers)
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
        "<Message>The server is busy.</Message></Error>"
    )
    headers["x-ms-error-code"] = "ServerBusy"
    return web.Response(status=503, text=body, content_type="application/xml", headers=headers)


def _reset(request: web.Request) -> None:
    """Close the client's connection with a TCP reset (SO_LINGER 0), no answer."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _dropped() -> web.Response:
    """What a handler returns once it reset the connection: aiohttp's attempt to send it fails
    quietly (a ConnectionError it expects from clients that went away)."""
    return web.Response(status=599)


class FaultProxy(ForwardingProxy):
    """One proxy: ``await start()`` returns its URL; ``profile`` may be changed at any time."""

    def __init__(
        self,
        upstream: str,
        *,
        flavour: Flavour,
        profile: FaultProfile | None = None,
        seed: int = 0,
        keep_decisions: int = 10_000,
        request_flips: bool = True,
    ) -> None:
        super().__init__(upstream)
        self.flavour = flavour
        self.profile = profile or FaultProfile()
        self.seed = seed
        # False in front of an emulator that stores damaged bytes its real counterpart would
        # refuse against their checksum (moto, fake-gcs-server): a flipped request there tests
        # the emulator, not the client.
        self.request_flips = request_flips
        self.stats = ProxyStats()
        self.decisions: list[Decision] = []
        self._keep = keep_decisions
        self._rng = random.Random(seed)
        self._forced: list[tuple[FaultKind, str | None]] = []
        # What a real Azure account would have discarded of the blocks Azurite keeps.
        self.blocks = BlockLedger()

    def force(self, fault: FaultKind, times: int = 1, *, method: str | None = None) -> None:
        """Give the next ``times`` requests (of ``method``, if given) ``fault`` whatever the
        profile says, for tests that need one fault at one place (a flip or truncation that
        cannot apply to a request is kept for the next one)."""
        self._forced += [(fault, method)] * times

    def _take_forced(self, method: str) -> tuple[FaultKind, str | None] | None:
        for index, (fault, wanted) in enumerate(self._forced):
            if wanted is None or wanted == method:
                del self._forced[index]
                return fault, wanted
        return None

    def decide(self, method: str, path: str) -> Decision:
        """The next decision: one draw for the fault, one for its position or latency."""
        draw, position = self._rng.random(), self._rng.random()
        number = self.stats.requests
        self.stats.requests += 1
        fault: FaultKind = "none"
        cumulative = 0.0
        for kind in FAULT_ORDER:
            cumulative += getattr(self.profile, kind)
            if draw < cumulative:
                fault = kind
                break
        forced = self._take_forced(method)
        if forced is not None:
            fault = forced[0]
        decision = Decision(number, fault, position, method, path, forced)
        if len(self.decisions) < self._keep:
            self.decisions.append(decision)
        return decision

    # -- one request -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        decision = self.decide(request.method, request.path)
        profile = self.profile
        fault = decision.fault
        body = await request.read()
        if fault == "latency":
            await asyncio.sleep(decision.position * profile.max_latency_s)
        elif fault == "throttle":
            self.stats.faults[fault] += 1
            return _throttle_response(self.flavour, profile.retry_after_s)
        elif fault == "reset_before":
            self.stats.faults[fault] += 1
            _reset(request)
            return _dropped()
        elif fault == "flip_request":
            content_type = request.headers.get("Content-Type", "")
            applies = profile.flip_scope == "any" or _is_data(content_type)
            if body and applies and self.request_flips:
                body = flip_byte(body, decision.position)
            else:
                self.stats.not_applicable[fault] += 1
                if decision.forced:
                    self._forced.insert(0, decision.forced)
                fault = "none"
        try:
            status, upstream_headers, payload = await self.forward(request, body)
        except (aiohttp.ClientError, TimeoutError):
            # The emulator itself failed: the client sees a reset, as it would without us.
            self.stats.faults["upstream_error"] += 1
            _reset(request)
            return _dropped()
        if self.flavour == "azure":
            blob_type = request.headers.get("x-ms-blob-type")
            self.blocks.observe(
                request.method, request.rel_url.raw_path, request.query, blob_type, status
            )
        if fault in ("latency", "flip_request"):
            self.stats.faults[fault] += 1
        elif fault == "reset_after":
            self.stats.faults[fault] += 1
            _reset(request)
            return _dropped()
        elif fault == "flip_response":
            content_type = upstream_headers.get("Content-Type", "")
            if payload and (profile.flip_scope == "any" or _is_data(content_type)):
                payload = flip_byte(payload, decision.position)
                self.stats.faults[fault] += 1
            else:
                self.stats.not_applicable[fault] += 1
                if decision.forced:
                    self._forced.insert(0, decision.forced)
        bodiless = request.method == "HEAD" or status in (204, 304)
        if fault == "truncate" and payload and not bodiless:
            self.stats.faults[fault] += 1
            response = self.response(status, upstream_headers)
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: int(decision.position * len(payload))])
            _reset(request)
            return _dropped()
        if fault == "truncate" and not bodiless:
            self.stats.not_applicable[fault] += 1
            if decision.forced:
                self._forced.insert(0, decision.forced)
        return await self.answer(request, status, upstream_headers, payload)


def profile_from_dict(values: dict[str, object]) -> FaultProfile:
    return FaultProfile(**values)  # type: ignore[arg-type]


def profile_as_dict(profile: FaultProfile) -> dict[str, object]:
    return asdict(profile)
