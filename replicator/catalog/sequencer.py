"""Sequencers as strings that order correctly under plain string comparison in SQL.

Each store orders the changes of one key with its own token:

* S3 ``sequencer``: hex of varying length; two values of one key are compared after
  right-padding the shorter with ``0`` (AWS documents exactly this rule);
* GCS ``generation``: a decimal integer (microseconds), compared as a number;
* Azure Event Grid ``sequencer``: fixed-width hex, so right-padding changes nothing.

``sequencer_key`` maps each to a fixed-width string: hex is upper-cased and right-padded with
``0``; decimal is left-padded with ``0`` (a ``.N`` suffix, which ``replicator.pipeline.events``
appends to GCS generations to put a deletion after its creation, is kept after the padded
number).
Within one kind, string order of the keys is the store's order, so the catalog compares
sequencers with ``>`` in one SQL statement on SQLite and PostgreSQL (their columns use
byte-order collation). The mapping is idempotent: the already padded sequencers of
``replicator.pipeline.events.ChangeEvent`` map to themselves (or, for Azure's 32-character
form, to one padding that keeps their order).

A string of decimal digits is ambiguous (a valid S3 sequencer can be all digits), so the kind
is taken from the store of the source URL and guessed only for stores without sequencers.

A change without a sequencer (moto sends none; listing scans have none) is ordered by its event
time: ``sequencer_from_time`` gives a decimal sequencer whose key has at least 40 leading
zeros, so it orders among other time-based ones and before every native S3 or Azure sequencer
of the same key (a listing never overrides a notification).

A repair (a listing found a replica that differs from its source although the key's high-water
is newer than the listing: an event was lost) is ordered just after the high-water it repairs:
``repair_key`` appends ``~`` and the repair's time to the high-water's key. Every change the
high-water had seen is then older than the repair (a proper prefix sorts first), and every
newer change of the key is still newer (it differs from the high-water within its first
``SEQUENCER_WIDTH`` characters, where it is greater). Repairing again only lengthens the
time, never the base.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal

SequencerKind = Literal["hex", "decimal"]

SEQUENCER_WIDTH = 64
_HEX = re.compile(r"[0-9A-Fa-f]+")
_DECIMAL = re.compile(r"([0-9]+)(\.[0-9]+)?")
_KIND_BY_SCHEME: dict[str, SequencerKind] = {"s3": "hex", "az": "hex", "gs": "decimal"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REPAIR_MARK = "~"
_REPAIR_TIME_WIDTH = 20


def sequencer_kind(url: str) -> SequencerKind | None:
    """The kind of sequencer the store of ``url`` produces; None where it has none of its own."""
    return _KIND_BY_SCHEME.get(url.partition("://")[0])


def sequencer_key(
    seq: str, width: int = SEQUENCER_WIDTH, *, kind: SequencerKind | None = None
) -> str:
    """The normalised form of ``seq``: compare two of one key with ``<`` to order them.

    Without ``kind``, digits (with an optional ``.N`` suffix) are taken as decimal and anything
    else as hex.
    """
    base, mark, repaired_at = seq.partition(REPAIR_MARK)
    if mark:
        if not repaired_at.isdigit() or len(repaired_at) != _REPAIR_TIME_WIDTH:
            raise ValueError(f"sequencer {seq!r} has a malformed repair time")
        return sequencer_key(base, width, kind=kind) + REPAIR_MARK + repaired_at
    decimal = _DECIMAL.fullmatch(seq)
    if kind is None:
        kind = "decimal" if decimal else "hex"
    if kind == "decimal":
        if decimal is None:
            raise ValueError(f"sequencer {seq!r} is not decimal")
        whole, suffix = decimal.group(1), decimal.group(2) or ""
        if len(whole) > width:
            raise ValueError(f"sequencer {seq!r} is longer than {width} digits")
        return whole.rjust(width, "0") + suffix
    if not _HEX.fullmatch(seq):
        raise ValueError(f"sequencer {seq!r} is not hex")
    if len(seq) > width:
        raise ValueError(f"sequencer {seq!r} is longer than {width} characters")
    return seq.upper().ljust(width, "0")


def sequencer_from_time(moment: datetime) -> str:
    """A decimal sequencer for a change without one of their own: its event time in
    microseconds since the epoch."""
    if moment.tzinfo is None:
        raise ValueError("event times must be timezone-aware")
    return str((moment - _EPOCH) // timedelta(microseconds=1))


def change_key(source_url: str, seq: str, event_time: datetime) -> str:
    """The stored sequencer of a change to ``source_url``: its own, or its event time's."""
    if not seq:
        return sequencer_key(sequencer_from_time(event_time), kind="decimal")
    return sequencer_key(seq, kind=sequencer_kind(source_url))


def repair_key(high_water_key: str, moment: datetime) -> str:
    """The stored sequencer of a repair of a key whose high-water key is ``high_water_key``:
    after it and everything it had seen, before every newer change of the key."""
    base = high_water_key.partition(REPAIR_MARK)[0]
    return base + REPAIR_MARK + sequencer_from_time(moment).rjust(_REPAIR_TIME_WIDTH, "0")
