"""Choose how to copy one object (pure: a function of sizes and both stores' limits).

Fallback chain, as in the best copy tools: server-side copy when both ends are the same store
and it can copy internally; otherwise a single put for objects no larger than one part;
otherwise a multipart upload whose part size is the configured size raised until the part
count fits the destination. Its parts go in parallel; to a destination with ordered uploads
(GCS: one resumable session, an ordinary object rather than a composite of part objects),
they go in order instead when the object is at most ``ORDERED_UPLOAD_MAX``, unless an upload
of it is left to resume (an ordered upload is never resumed) or an ordered upload of it came
out damaged (its parts carry no checksum of their own: sent again, each is checked).
Without a configured size, parts are sized to the object (``auto_part_size``): each parallel
slot's buffer carries about ``BUFFER_REUSE`` parts, as large as the memory budget allows for
every slot at once, and never below ``DEFAULT_PART_SIZE``. Parts are multiples of the
fingerprint block so each part can be fingerprinted on its own, in any order.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from connectors.base import Limits, MiB
from replicator.engine.hashing import FINGERPRINT_BLOCK
from replicator.errors import ReplicatorError

DEFAULT_PART_SIZE = 16 * MiB
# Largest object sent as an ordered upload, one part after the other from one streamed read:
# one request per part plus two, where composing costs a part object per part, the composes
# and the parts' deletion, and an ordinary object. On the test bed (S3 to GCS, medians of 3,
# ``python -m benchmarks.ordered_uploads``) one stream was faster at 32 MiB (0.84 s against
# 1.00 s), within 16% at 64 MiB, and 1.3-1.5x slower at 128 MiB than parallel parts.
ORDERED_UPLOAD_MAX = 64 * MiB
# Parts per parallel slot of an automatically sized copy. A slot's buffer is reused from part
# to part, and only its first use costs the kernel a zeroed page per 4 KiB (engine.memory).
# One part per slot made every byte of a one-object copy land in a fresh page. Four per slot
# against one, 512 MiB objects (``python -m benchmarks.part_sizes``, medians of 3): client
# CPU-s/GiB s3->az 4.66 vs 5.58, az->s3 4.70 vs 5.80, s3->gs 4.60 vs 4.86; peak memory 230-362
# MB vs 597-610; wall time the same or shorter (streamed reads of consecutive parts keep the
# ranged GETs few, so more parts do not mean more reads of the source).
BUFFER_REUSE = 4


class Strategy(enum.StrEnum):
    SERVER_SIDE = "server_side"
    MULTIPART = "multipart"
    SINGLE = "single"


class PlanError(ReplicatorError):
    """The object cannot be copied to this destination at all; nothing was moved."""


@dataclass(frozen=True)
class Part:
    number: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class CopyPlan:
    strategy: Strategy
    size: int
    part_size: int
    parts: tuple[Part, ...]
    #: Why this path, in words (``replicator cp --explain`` prints it).
    reason: str = ""
    #: Multipart parts sent one after the other into an ordered upload (not in parallel).
    ordered: bool = False


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def choose_part_size(size: int, dest: Limits, requested: int = DEFAULT_PART_SIZE) -> int:
    """The smallest block-aligned part size >= ``requested`` and the destination's minimum
    that fits ``size`` into the destination's maximum number of parts."""
    fits_count = -(-size // dest.max_parts)
    part_size = _round_up(max(requested, dest.min_part_size, fits_count, 1), FINGERPRINT_BLOCK)
    if part_size > dest.max_part_size:
        raise PlanError(
            f"object of {size} bytes needs parts of {part_size} bytes to fit "
            f"{dest.max_parts} parts, over the destination's maximum part of "
            f"{dest.max_part_size} bytes"
        )
    return part_size


def auto_part_size(size: int, *, concurrency: int, budget: int) -> int:
    """A part size for an object of ``size`` bytes copied ``concurrency`` parts at a time with
    ``budget`` bytes of memory: large parts cost fewer requests (each has a fixed overhead at
    the store), but all parallel parts must fit in the budget together, and each slot's
    buffer should serve ``BUFFER_REUSE`` parts rather than be paged in for one."""
    slots = max(1, concurrency)
    per_slot = max(1, budget // slots)
    return max(DEFAULT_PART_SIZE, min(-(-size // (slots * BUFFER_REUSE)), per_slot))


def split(size: int, part_size: int) -> tuple[Part, ...]:
    return tuple(
        Part(number, offset, min(part_size, size - offset))
        for number, offset in enumerate(range(0, size, part_size), start=1)
    )


def plan_copy(
    size: int,
    dest: Limits,
    *,
    same_store: bool,
    part_size: int = DEFAULT_PART_SIZE,
    unordered_because: str | None = None,
) -> CopyPlan:
    """``unordered_because``: why the parts may not go in order into one upload, though
    the destination has ordered uploads (an upload left to resume, a damaged ordered one)."""
    if size > dest.max_object_size:
        raise PlanError(
            f"object of {size} bytes is larger than the destination's maximum object size "
            f"of {dest.max_object_size} bytes"
        )
    if same_store and dest.server_side_copy and size <= dest.server_side_copy_limit:
        reason = (
            f"one store ({dest.server_side_copy_scope}): {dest.server_side_copy_via}; "
            "no bytes through this process"
        )
        return CopyPlan(Strategy.SERVER_SIDE, size, size, (), reason)
    through = _why_not_server_side(size, dest, same_store=same_store)
    if size <= min(part_size, dest.max_single_put) or not dest.multipart:
        if size > dest.max_single_put:
            raise PlanError(
                f"object of {size} bytes exceeds the destination's single-put limit of "
                f"{dest.max_single_put} bytes and it has no multipart upload"
            )
        single = (
            "the destination has no multipart upload"
            if not dest.multipart
            else f"{size} bytes fit in one part of {part_size}"
        )
        return CopyPlan(
            Strategy.SINGLE, size, size, (Part(1, 0, size),), f"{through}; {single}: one put"
        )
    chosen = choose_part_size(size, dest, part_size)
    parts = split(size, chosen)
    sized = f"{len(parts)} parts of {chosen} bytes"
    if chosen > _round_up(part_size, FINGERPRINT_BLOCK):
        sized += (
            f" (raised from {part_size} to fit the destination's {dest.max_parts} parts "
            f"of {dest.min_part_size} to {dest.max_part_size} bytes)"
        )
    reason = f"{through}; {size} bytes in {sized}"
    if not dest.ordered_uploads:
        return CopyPlan(Strategy.MULTIPART, size, chosen, parts, reason)
    if unordered_because:
        reason += f", in parallel: {unordered_because}"
        return CopyPlan(Strategy.MULTIPART, size, chosen, parts, reason)
    if size > ORDERED_UPLOAD_MAX:
        reason += f", in parallel and composed (over {ORDERED_UPLOAD_MAX} bytes)"
        return CopyPlan(Strategy.MULTIPART, size, chosen, parts, reason)
    reason += ", in order into one upload: an ordinary object"
    return CopyPlan(Strategy.MULTIPART, size, chosen, parts, reason, ordered=True)


def _why_not_server_side(size: int, dest: Limits, *, same_store: bool) -> str:
    """Why the bytes pass through this process: the words of a plan's reason."""
    if not dest.server_side_copy:
        return "the destination has no server-side copy"
    if not same_store:
        return (
            f"not one store: the destination copies server-side only within "
            f"{dest.server_side_copy_scope}"
        )
    return (
        f"{size} bytes exceed the destination's server-side copy limit of "
        f"{dest.server_side_copy_limit} bytes"
    )


def stripes(parts: Sequence[Part], count: int) -> list[list[Part]]:
    """``parts`` in about ``count`` runs of consecutive parts, so each run is one range."""
    if not parts:
        return []
    per_stripe = -(-len(parts) // count)
    runs: list[list[Part]] = []
    current: list[Part] = []
    for part in parts:
        if current and (len(current) == per_stripe or part.number != current[-1].number + 1):
            runs.append(current)
            current = []
        current.append(part)
    runs.append(current)
    return runs
