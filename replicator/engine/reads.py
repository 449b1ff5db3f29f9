"""Reading the source for a copy: pinned reads, one read shared by several destinations, and
streamed runs of parts filled into their own buffers."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from connectors.base import NotFound, ObjectMeta, PreconditionFailed

T = TypeVar("T")


class SourceMoved(Exception):
    """A pinned source read found another version (or none): restart from a fresh HEAD."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def pinned(operation: Callable[[], Awaitable[T]]) -> T:
    try:
        return await operation()
    except (PreconditionFailed, NotFound) as exc:
        raise SourceMoved(exc) from exc


# A whole object read with its metadata (``ObjectStore.get``), and the version a read is of.
_Got = tuple[ObjectMeta, bytes]
_ReadKey = tuple[str, str | None, str | None]


class SharedSourceRead:
    """One read of a whole (small) source object, shared by the copies of it to several
    destinations that run at once: each destination costs a put, not also a GET.

    Reads are keyed by the exact version they are pinned to, so copies that saw different
    versions never share bytes; a failed read fails every copy waiting on it, and each then
    restarts on its own.
    """

    def __init__(self) -> None:
        self._reads: dict[_ReadKey, asyncio.Future[bytes]] = {}
        self._gets: dict[_ReadKey, asyncio.Future[_Got]] = {}

    async def read(self, src: ObjectMeta, load: Callable[[], Awaitable[bytes]]) -> bytes:
        return await _shared(self._reads, (src.url, src.etag, src.version), load)

    async def get(
        self, listed: ObjectMeta, load: Callable[[], Awaitable[_Got]]
    ) -> tuple[ObjectMeta, bytes]:
        """One GET of a listed object (bytes and metadata), shared like ``read``."""
        return await _shared(self._gets, (listed.url, listed.etag, listed.version), load)


async def _shared(
    reads: dict[_ReadKey, asyncio.Future[T]], key: _ReadKey, load: Callable[[], Awaitable[T]]
) -> T:
    read = reads.get(key)
    if read is None:
        read = reads[key] = asyncio.ensure_future(load())
        read.add_done_callback(functools.partial(_forget_failed, reads, key))
    # One copy being cancelled must not cancel the read the others wait on.
    return await asyncio.shield(read)


def _forget_failed(
    reads: dict[_ReadKey, asyncio.Future[T]], key: _ReadKey, done: asyncio.Future[T]
) -> None:
    """A failed read is not kept: a copy restarting on the same version reads again."""
    failed = done.cancelled() or done.exception() is not None
    if failed and reads.get(key) is done:
        del reads[key]


class StripeReader:
    """Consecutive parts of one stripe, each filled in order from one streamed read of their
    range: every part is its own buffer, and the stream's chunks are copied into it once.

    A stream that breaks (connection lost, throttled) is not resumed: every part still to take
    from it raises, and is read by itself instead.
    """

    def __init__(
        self,
        open_stream: Callable[[], AsyncIterator[bytes]],
        new_buffer: Callable[[int], bytearray],
    ) -> None:
        self._open = open_stream
        self._new_buffer = new_buffer
        self._chunks: AsyncIterator[bytes] | None = None
        self._left_over = memoryview(b"")
        self._broken: Exception | None = None
        self._taken: dict[int, asyncio.Event] = {}

    def _event(self, part_number: int) -> asyncio.Event:
        return self._taken.setdefault(part_number, asyncio.Event())

    def mark_taken(self, part_number: int) -> None:
        """The part's turn at the stream is over (it has its bytes, or will read them alone)."""
        self._event(part_number).set()

    async def wait_taken(self, part_number: int) -> None:
        await self._event(part_number).wait()

    async def take(self, size: int) -> bytearray:
        if self._broken is not None:
            raise self._broken
        part = self._new_buffer(size)
        filled = 0
        try:
            if self._chunks is None:
                self._chunks = aiter(self._open())
            with memoryview(part) as into:
                while filled < size:
                    if not self._left_over:
                        self._left_over = memoryview(await anext(self._chunks))
                    count = min(len(self._left_over), size - filled)
                    into[filled : filled + count] = self._left_over[:count]
                    self._left_over = self._left_over[count:]
                    filled += count
        except StopAsyncIteration:
            # The object is shorter than the version seen: it changed.
            raise SourceMoved(
                PreconditionFailed("the source ended before the range read", url="")
            ) from None
        except (PreconditionFailed, NotFound) as exc:
            raise SourceMoved(exc) from exc
        except Exception as exc:
            self._broken = exc
            raise
        return part

    async def close(self) -> None:
        closing = getattr(self._chunks, "aclose", None)
        if closing is not None:
            await closing()
