"""The cost estimate of a dry run: requests and egress a reconciliation's copies would cost.

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

A copy is counted as one read of the source, one write per part at the destination (parts of
``PART_BYTES``; one write for a smaller object) and, unless both ends are the same store
(a server-side copy), its bytes as egress of the source's cloud. Listing both ends costs one
write-class request per 1,000 keys on each. Any entry can be overridden in the daemon
configuration, and again by a TOML file (``--prices FILE``) of the same shape::

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
    ``copy_bytes`` bytes in all from the source to one destination."""
    zero = Price(0.0, 0.0, 0.0)
    src, dst = prices.get(source_scheme, zero), prices.get(dest_scheme, zero)
    pages = math.ceil(listed / LIST_PAGE) if listed else 0
    writes = max(copies, math.ceil(copy_bytes / PART_BYTES))
    requests = (
        pages * (src.writes_per_1000 + dst.writes_per_1000) / 1000
        + copies * src.reads_per_1000 / 1000
        + writes * dst.writes_per_1000 / 1000
    )
    egress = 0.0 if same_store else copy_bytes / 1e9 * src.egress_per_gb
    return Estimate(requests, egress)
