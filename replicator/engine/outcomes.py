"""What a copy comes to, short of its ``CopyResult``: the engine's own outcomes of one
attempt (``Executed``, ``Skipped``), the errors that end a copy without writing anything, and
what a caller may know of a destination (``ABSENT``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from connectors.base import NotFound, ObjectMeta
from replicator.engine.journal import UploadRecord
from replicator.engine.planner import CopyPlan
from replicator.engine.results import version_id
from replicator.errors import ReplicatorError


class SourceChanged(ReplicatorError):
    """The source kept changing while it was being copied; nothing was written."""


class SourceGone(NotFound):
    """The source was deleted while it was being copied (its copy restarted and found no
    object): nothing was written, and the caller applies the deletion instead."""


@dataclass(frozen=True)
class Executed:
    destination: ObjectMeta
    parts_resumed: int
    bytes_transferred: int
    fingerprint: str | None
    #: The source as read, when the read itself brought its metadata.
    source: ObjectMeta | None = None
    ordered: bool = False


def resumes(record: UploadRecord, src: ObjectMeta, plan: CopyPlan) -> bool:
    """Whether ``record``, an upload left by a crash, is resumed by a copy of ``src`` planned
    as ``plan``: never one of another version (the source was overwritten since) or plan, nor
    one a striped copy's part halted."""
    return (
        record.halted is None
        and record.source_version == version_id(src)
        and record.part_size == plan.part_size
        and record.size == src.size
    )


@dataclass(frozen=True)
class Skipped:
    source: ObjectMeta
    existing: ObjectMeta | None
    reason: str


class Absent(enum.Enum):
    """What a caller knows of a destination: nothing is there (from a listing, the catalog)."""

    ABSENT = "absent"


ABSENT = Absent.ABSENT


def first_error(exc: BaseException) -> BaseException:
    """The error that started a failure, out of a TaskGroup's exception group."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
