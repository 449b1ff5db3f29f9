"""The price table and the one cost model: what the stores' requests and egress cost, as the
daemon counted them (``replicator status``, ``replicator catalog costs``) and as a dry run
predicts them (``backfill --dry-run``).

List prices in US dollars (standard storage class, first volume tier, public list prices of
2025; check your contract), per store scheme:

======  ===================  ===================  ====================================
scheme  writes per 1,000     reads per 1,000      egress per GB (out of the cloud)
======  ===================  ===================  ====================================
s3      0.005 (PUT, COPY,    0.0004 (GET, HEAD)   0.09
        POST, LIST)
gs      0.005 (class A)      0.0004 (class B)     0.12
az      0.0065 (write, list) 0.0005 (read)        0.087
file    0                    0                    0
mem     0                    0                    0
======  ===================  ===================  ====================================

One model prices both what the daemon counted (``replicator.engine.costs``: the requests each
store served, by class, and the bytes that left a provider or region) and what a dry run
predicts: PUT (whole objects, parts, creating and completing uploads), COPY and LIST requests
are priced as writes, GET and HEAD as reads, DELETE is free (as all three providers bill it),
and egress bytes at the egress price of the store they were read from.

A dry run predicts, for each copy, one read of the source, one write per part at the
destination (parts of ``PART_BYTES``; one write for a smaller object) and, unless both ends
are the same store (a server-side copy), its bytes as egress of the source's cloud; listing
both ends costs one LIST request per 1,000 keys on each.

Any entry can be overridden in the daemon configuration, and again by a TOML file
(``--prices FILE``) of the same shape::

    [reconcile.prices.s3]          # in the configuration; [s3] in a --prices file
    writes_per_1000 = 0.005
    reads_per_1000 = 0.0004
    egress_per_gb = 0.02           # e.g. a private interconnect
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from connectors.base import RequestClass
from replicator.engine.costs import Usage
from replicator.errors import ConfigError

PART_BYTES = 64 * 1024 * 1024
LIST_PAGE = 1000


@dataclass(frozen=True)
class Price:
    writes_per_1000: float
    reads_per_1000: float
    egress_per_gb: float


DEFAULT_PRICES: dict[str, Price] = {
    "s3": Price(0.005, 0.0004, 0.09),
    "gs": Price(0.005, 0.0004, 0.12),
    "az": Price(0.0065, 0.0005, 0.087),
    "file": Price(0.0, 0.0, 0.0),
    "mem": Price(0.0, 0.0, 0.0),
}


def load_prices(
    path: Path | None = None, overrides: Mapping[str, Mapping[str, object]] | None = None
) -> dict[str, Price]:
    """The default table with ``overrides`` (the configuration's ``[reconcile.prices]``) laid
    over it, then the entries of the TOML file at ``path``."""
    prices = dict(DEFAULT_PRICES)
    _lay_over(prices, overrides or {}, "[reconcile.prices]")
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"price table {path}: {exc}") from None
        _lay_over(prices, raw, f"price table {path}")
    return prices


def _lay_over(prices: dict[str, Price], table: Mapping[str, object], origin: str) -> None:
    names = {f.name for f in fields(Price)}
    for scheme, entries in table.items():
        if not isinstance(entries, Mapping) or not set(entries) <= names:
            raise ConfigError(f"{origin}: [{scheme}] takes only {', '.join(sorted(names))}")
        values = {}
        for name, value in entries.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{origin}: {scheme}.{name} must be a number >= 0")
            values[name] = float(value)
        prices[scheme] = replace(prices.get(scheme, Price(0.0, 0.0, 0.0)), **values)


@dataclass(frozen=True)
class Estimate:
    requests_usd: float
    egress_usd: float

    @property
    def total_usd(self) -> float:
        return self.requests_usd + self.egress_usd

    def summary(self) -> dict[str, float]:
        return {
            "requests_usd": self.requests_usd,
            "egress_usd": self.egress_usd,
            "total_usd": self.total_usd,
        }


#: The request classes priced as writes; the others but DELETE are priced as reads.
WRITE_CLASSES = frozenset({RequestClass.PUT, RequestClass.COPY, RequestClass.LIST})
READ_CLASSES = frozenset({RequestClass.GET, RequestClass.HEAD})
_FREE = Price(0.0, 0.0, 0.0)


def cost_of(prices: Mapping[str, Price], scheme: str, usage: Usage) -> Estimate:
    """What ``usage`` of a store of ``scheme`` costs."""
    price = prices.get(scheme, _FREE)
    writes = sum(usage.count(kind) for kind in WRITE_CLASSES)
    reads = sum(usage.count(kind) for kind in READ_CLASSES)
    requests = writes * price.writes_per_1000 / 1000 + reads * price.reads_per_1000 / 1000
    return Estimate(requests, usage.egress_bytes / 1e9 * price.egress_per_gb)


def estimate(
    prices: dict[str, Price],
    source_scheme: str,
    dest_scheme: str,
    *,
    listed: int,
    copies: int,
    copy_bytes: int,
    same_store: bool = False,
) -> Estimate:
    """The cost of listing ``listed`` keys at both ends and copying ``copies`` objects of
    ``copy_bytes`` bytes in all from the source to one destination: the usage predicted at
    each end, priced by ``cost_of``."""
    pages = math.ceil(listed / LIST_PAGE) if listed else 0
    writes = max(copies, math.ceil(copy_bytes / PART_BYTES))
    source = Usage(
        requests={RequestClass.LIST: pages, RequestClass.GET: copies},
        bytes_read=copy_bytes,
        egress_bytes=0 if same_store else copy_bytes,
    )
    dest = Usage(requests={RequestClass.LIST: pages, RequestClass.PUT: writes})
    at_source = cost_of(prices, source_scheme, source)
    at_dest = cost_of(prices, dest_scheme, dest)
    return Estimate(
        at_source.requests_usd + at_dest.requests_usd, at_source.egress_usd + at_dest.egress_usd
    )
