"""Comparing two listings: a sorted merge of a source and a destination listing, streamed page
by page, so memory stays flat whatever the number of objects.

Every connector lists in key order (``ObjectStore.list``): S3 and GCS by the UTF-8 bytes of
the key, Azure by the blob name, the memory store by ``sorted``, the file store by a walk that
sorts each directory's entries with a ``/`` after directory names (which is the order of the
full keys). Python compares strings by code point, which is the order of their UTF-8 bytes,
so the merge compares keys with ``<``. A listing that breaks that order would make the merge
report objects missing or extra that are not: ``merge`` checks every key against the one
before it and raises ``ListingOrderError`` instead of guessing.

``verdict`` decides from what the two listings say, without a request, whenever it can: a
destination key absent is missing, a size that differs is different, a destination whose
replica marks (read from listings that carry user metadata: GCS, Azure, files, memory)
show a verified replica of the listed source version is in sync. Otherwise (an S3 listing
carries no metadata) the verdict is ``UNSURE`` and the copier's own check (a HEAD) decides.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from connectors.base import ObjectMeta
from replicator.engine.metadata import replica_mismatch, replica_source
from replicator.engine.transfer import version_id
from replicator.errors import ReplicatorError


class ListingOrderError(ReplicatorError):
    """A listing returned keys out of order: comparing it by a merge would be wrong."""


class Verdict(enum.StrEnum):
    SAME = "same"  # the destination holds a verified replica of the listed version
    MISSING = "missing"  # no destination object
    DIFFERENT = "different"  # the destination differs (size, or a replica of another version)
    UNSURE = "unsure"  # the listings cannot tell: a HEAD of either end decides
    EXTRA = "extra"  # a destination object without a source object


@dataclass(frozen=True)
class Pair:
    """One key and what each listing showed of it (None: absent there): the source, and each
    destination in the order they were given."""

    key: str
    source: ObjectMeta | None
    dests: tuple[ObjectMeta | None, ...]


@dataclass(frozen=True)
class KeyFilter:
    """``--include`` / ``--exclude`` glob patterns (``fnmatch``, ``*`` also matches ``/``):
    a key is compared if it matches some include (or there are none) and no exclude."""

    include: Sequence[str] = ()
    exclude: Sequence[str] = ()

    def __call__(self, key: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(key, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(key, p) for p in self.exclude)


async def _ordered(listing: AsyncIterator[ObjectMeta], where: str) -> AsyncIterator[ObjectMeta]:
    previous: str | None = None
    async for meta in listing:
        if previous is not None and meta.key <= previous:
            raise ListingOrderError(
                f"the listing of {where} returned {meta.key!r} after {previous!r}; it cannot be "
                "compared by a merge"
            )
        previous = meta.key
        yield meta


async def merge(
    source: AsyncIterator[ObjectMeta],
    dests: Sequence[AsyncIterator[ObjectMeta]],
    *,
    keys: KeyFilter | None = None,
    names: Sequence[str] = (),
) -> AsyncIterator[Pair]:
    """Every key of any listing once, in key order, with what each side showed. ``names``:
    the source's and each destination's name, for errors."""
    wanted = keys or KeyFilter()
    labels = [*names, *(f"listing {i}" for i in range(len(names), len(dests) + 1))]
    listings = [_ordered(it, label) for it, label in zip([source, *dests], labels, strict=False)]
    heads: list[ObjectMeta | None] = [await anext(it, None) for it in listings]
    while True:
        present = [h.key for h in heads if h is not None]
        if not present:
            return
        key = min(present)
        shown: list[ObjectMeta | None] = []
        for i, head in enumerate(heads):
            if head is not None and head.key == key:
                shown.append(head)
                heads[i] = await anext(listings[i], None)
            else:
                shown.append(None)
        if wanted(key):
            yield Pair(key, shown[0], tuple(shown[1:]))


def verdict(src: ObjectMeta | None, dst: ObjectMeta | None) -> Verdict:
    """What the listings say of one key at one destination (see the module docstring)."""
    if src is None:
        return Verdict.EXTRA if dst is not None else Verdict.SAME
    if dst is None:
        return Verdict.MISSING
    if src.size != dst.size:
        return Verdict.DIFFERENT
    if not dst.attributes_known:
        return Verdict.UNSURE
    if replica_source(dst.attributes.user_metadata) != src.url:
        return Verdict.DIFFERENT
    if replica_mismatch(src, version_id(src), dst) is None:
        return Verdict.SAME
    return Verdict.UNSURE
