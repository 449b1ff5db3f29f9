"""The pure parts of reconciliation: the sorted merge of listings, the listing verdicts, key
filters and the dry run's price table."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base import ObjectMeta
from replicator.daemon.reconcile.pricing import DEFAULT_PRICES, estimate, load_prices
from replicator.engine.compare import KeyFilter, ListingOrderError, Verdict, merge, verdict
from replicator.errors import ConfigError
from tests.reconcile.conftest import sync


def meta(key: str, size: int = 1) -> ObjectMeta:
    return ObjectMeta(f"mem://b/{key}", key, size, "e", None, None, attributes_known=False)


async def listing(keys: Sequence[str]) -> AsyncIterator[ObjectMeta]:
    for key in keys:
        yield meta(key)


async def merged(
    source: Sequence[str], *dests: Sequence[str], keys: KeyFilter | None = None
) -> list[tuple[str, bool, tuple[bool, ...]]]:
    return [
        (p.key, p.source is not None, tuple(d is not None for d in p.dests))
        async for p in merge(listing(source), [listing(d) for d in dests], keys=keys)
    ]


@given(
    st.sets(st.text(min_size=1, max_size=6)),
    st.sets(st.text(min_size=1, max_size=6)),
    st.sets(st.text(min_size=1, max_size=6)),
)
def test_every_key_once_in_order_with_each_side(a: set[str], b: set[str], c: set[str]) -> None:
    found = sync(merged(sorted(a), sorted(b), sorted(c)))
    assert [key for key, _, _ in found] == sorted(a | b | c)
    assert all((src, dests) == (key in a, (key in b, key in c)) for key, src, dests in found)


def test_a_listing_out_of_order_is_refused() -> None:
    with pytest.raises(ListingOrderError, match="'a' after 'b'"):
        sync(merged(["b", "a"], []))


def test_include_and_exclude_globs() -> None:
    keys = KeyFilter(include=("*.csv",), exclude=("tmp/*",))
    found = sync(merged(["a.csv", "b.log", "d/e.csv", "tmp/c.csv"], [], keys=keys))
    assert [key for key, _, _ in found] == ["a.csv", "d/e.csv"]


def test_verdicts_from_listings() -> None:
    assert verdict(meta("k"), None) is Verdict.MISSING
    assert verdict(None, meta("k")) is Verdict.EXTRA
    assert verdict(meta("k", 1), meta("k", 2)) is Verdict.DIFFERENT
    # An S3 listing carries no replica marks: a HEAD decides.
    assert verdict(meta("k"), meta("k")) is Verdict.UNSURE


def test_cost_estimate_and_overrides(tmp_path: Path) -> None:
    found = estimate(DEFAULT_PRICES, "s3", "gs", listed=2000, copies=1000, copy_bytes=2 * 10**9)
    # 2 list pages at each end, 1,000 reads, 1,000 writes; 2 GB of S3 egress.
    assert found.requests_usd == pytest.approx(4 * 0.005 / 1000 + 0.0004 + 0.005)
    assert found.egress_usd == pytest.approx(0.18)
    same = estimate(
        DEFAULT_PRICES, "s3", "s3", listed=0, copies=1, copy_bytes=10**9, same_store=True
    )
    assert same.egress_usd == 0

    table = tmp_path / "prices.toml"
    table.write_text("[s3]\negress_per_gb = 0.02\n")
    prices = load_prices(table)
    assert prices["s3"].egress_per_gb == 0.02
    assert prices["s3"].reads_per_1000 == DEFAULT_PRICES["s3"].reads_per_1000
    table.write_text("[s3]\negress = 1\n")
    with pytest.raises(ConfigError, match="takes only"):
        load_prices(table)
