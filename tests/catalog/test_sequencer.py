"""Sequencer normalisation (pure): string order of the keys is each store's own order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.catalog.sequencer import (
    change_key,
    sequencer_from_time,
    sequencer_key,
    sequencer_kind,
)
from replicator.pipeline.events import azure_sequencer, gcs_sequencer, s3_sequencer

HEX = st.text("0123456789ABCDEF", min_size=1, max_size=40)


@given(HEX, HEX)
def test_hex_keys_order_like_right_padded_hex(a: str, b: str) -> None:
    """S3's rule: compare after right-padding the shorter with zeros."""
    width = max(len(a), len(b))
    expected = (a.ljust(width, "0") > b.ljust(width, "0")) - (
        a.ljust(width, "0") < b.ljust(width, "0")
    )
    ka, kb = sequencer_key(a, kind="hex"), sequencer_key(b, kind="hex")
    assert (ka > kb) - (ka < kb) == expected


@given(st.integers(0, 10**20), st.integers(0, 10**20))
def test_decimal_keys_order_like_numbers(a: int, b: int) -> None:
    """GCS generations compare as integers, whatever their number of digits."""
    ka, kb = sequencer_key(str(a), kind="decimal"), sequencer_key(str(b), kind="decimal")
    assert (ka > kb) - (ka < kb) == (a > b) - (a < b)


@given(HEX.filter(lambda s: len(s) >= 16), st.integers(1, 2**62), st.booleans())
def test_event_sequencers_keep_their_order(seq: str, generation: int, deleted: bool) -> None:
    """Already normalised ChangeEvent sequencers map to keys in the same order, and the
    mapping is idempotent."""
    s3 = s3_sequencer(seq)
    assert sequencer_key(s3, kind="hex") == s3
    gcs = gcs_sequencer(str(generation), deleted)
    assert sequencer_key(gcs, kind="decimal") > sequencer_key(
        gcs_sequencer(str(generation - 1), True), kind="decimal"
    )
    assert sequencer_key(gcs_sequencer(str(generation), True), kind="decimal") > sequencer_key(
        gcs_sequencer(str(generation), False), kind="decimal"
    )
    az = azure_sequencer(seq[:32])
    assert sequencer_key(sequencer_key(az, kind="hex"), kind="hex") == sequencer_key(az, kind="hex")


def test_kinds_and_errors() -> None:
    """The kind comes from the store; malformed or oversized sequencers are refused; lower
    case hex is the same sequencer as upper case."""
    assert [sequencer_kind(u) for u in ("s3://b/k", "az://c/k", "gs://b/k", "file:///d/k")] == [
        "hex",
        "hex",
        "decimal",
        None,
    ]
    assert sequencer_key("00ab", kind="hex") == sequencer_key("00AB", kind="hex")
    assert sequencer_key("123") == "0" * 61 + "123"
    assert sequencer_key("12ab").startswith("12AB")
    for bad, kind in (("", "hex"), ("12x", "hex"), ("1a", "decimal"), ("F" * 65, "hex")):
        with pytest.raises(ValueError, match="sequencer"):
            sequencer_key(bad, kind=kind)  # type: ignore[arg-type]


def test_changes_without_a_sequencer_order_by_time_and_before_native_ones() -> None:
    """Time-based keys follow event time and sort below every native S3 sequencer."""
    t = datetime(2024, 5, 1, tzinfo=UTC)
    earlier = change_key("s3://b/k", "", t)
    later = change_key("s3://b/k", "", t + timedelta(microseconds=1))
    assert earlier < later < change_key("s3://b/k", "0000000001", t)
    assert sequencer_from_time(t) == "1714521600000000"
    with pytest.raises(ValueError, match="timezone"):
        sequencer_from_time(datetime(2024, 5, 1))
