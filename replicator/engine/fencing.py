"""Fenced destination writes: a copy's final write (the put, or the completion of a multipart
upload) lands only if the destination still holds what the copy saw when it decided to write.

A worker that lost its partition without knowing it yet (a long pause, a network partition
from the broker) may still be copying while the partition's new owner copies the same key.
Cancelling on revocation covers the owner that knows; the fence covers the one that does
not: whichever final write comes second finds the key changed and does not land. The copy
then looks again (the source afresh, the destination afresh) and finds the key already holds
the source's current version, or writes over what is there now under a new fence. So an
older version can never land over a newer one written meanwhile, whoever wrote it.

The condition is the stores' own: ``create_only`` (S3 ``If-None-Match: *``, GCS
``ifGenerationMatch=0``, Azure ``If-None-Match: *``, a file store's link) where the key was
absent, ``if_match`` on the etag (generation) it held otherwise. A retried write whose first
attempt landed but whose answer was lost also fails its condition: looking again then finds
its own replica and the copy ends as done. A completion whose upload another writer aborted
meanwhile is treated the same way.

Server-side copies are fenced the same way (S3 CopyObject and the completion of an
UploadPartCopy upload, a GCS rewrite, an Azure Copy Blob, a file store's kernel copy).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from connectors.base import (
    AlreadyExists,
    NotFound,
    ObjectMeta,
    PreconditionFailed,
)

T = TypeVar("T")


class DestinationMoved(Exception):
    """The destination changed between the copy's look at it and its final write."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class Fence:
    """The condition of a copy's final write, from what the destination held when the copy
    looked: nothing (``create_only``), or the object with etag ``if_match``."""

    create_only: bool = False
    if_match: str | None = None

    @classmethod
    def seen(cls, existing: ObjectMeta | None) -> Fence:
        """The fence for a destination seen holding ``existing`` (None: nothing there). An
        object whose store reports no etag cannot be fenced on: its write goes unconditioned."""
        if existing is None:
            return cls(create_only=True)
        return cls(if_match=existing.etag) if existing.etag else UNFENCED


#: No condition: the write goes ahead whatever the destination holds.
UNFENCED = Fence()


async def fenced(write: Callable[[], Awaitable[T]], *, completion: bool = False) -> T:
    """Run a fenced ``write``; a failed condition becomes DestinationMoved. So does, for a
    multipart ``completion``, an upload that is gone: another writer of the key aborts the
    uploads it finds there before it starts its own (the janitor aborts abandoned ones)."""
    try:
        return await write()
    except (AlreadyExists, PreconditionFailed) as exc:
        raise DestinationMoved(exc) from exc
    except NotFound as exc:
        if completion:
            raise DestinationMoved(exc) from exc
        raise
