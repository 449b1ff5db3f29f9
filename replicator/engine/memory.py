"""The memory object data may use: a byte budget shared by every copy in a process, and the
part buffers it hands out and takes back for reuse.

Reusing part buffers matters for CPU as much as for memory: a fresh 64 MiB buffer costs the
kernel 16,384 page faults, each zeroing a page, before the first byte is read into it
(~0.65 CPU-seconds per GiB on this kind of machine, against ~0.1 to fill a buffer that is
already mapped). Buffers given back are kept while the budget has room for them, and for
``KEEP_IDLE_S`` at most, so an idle process returns its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from connectors.base import MiB

DEFAULT_BYTE_BUDGET = 512 * MiB
#: A buffer given back and not taken again within this long is released.
KEEP_IDLE_S = 30.0


class ByteBudget:
    """Bytes of object data allowed in memory at once, shared by every copy in a process.

    A part waits here before it is read, so memory stays bounded whatever the object size and
    concurrency. A part larger than the whole budget runs alone. Buffers for parts come from
    ``take_buffer`` and go back with ``give_buffer``; in use and kept buffers together never
    exceed the capacity.
    """

    def __init__(self, capacity: int = DEFAULT_BYTE_BUDGET) -> None:
        if capacity <= 0:
            raise ValueError("the byte budget must be positive")
        self.capacity = capacity
        self.in_use = 0
        self.peak = 0
        self._changed = asyncio.Condition()
        self._kept: list[tuple[float, bytearray]] = []
        self._kept_bytes = 0
        self._expiry: asyncio.TimerHandle | None = None

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        size = min(size, self.capacity)
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use + size <= self.capacity)
            self.in_use += size
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            async with self._changed:
                self.in_use -= size
                self._changed.notify_all()

    def take_buffer(self, size: int) -> bytearray:
        """A buffer of exactly ``size`` bytes for data reserved with ``reserve``: a kept one
        when there is one of that size (its old contents are overwritten by the caller), else
        a new one, after releasing kept buffers the budget no longer has room for."""
        self._release_idle()
        for index, (_, buffer) in enumerate(self._kept):
            if len(buffer) == size:
                del self._kept[index]
                self._kept_bytes -= size
                return buffer
        while self._kept and self.in_use + self._kept_bytes > self.capacity:
            _, dropped = self._kept.pop(0)
            self._kept_bytes -= len(dropped)
        return bytearray(size)

    def give_buffer(self, buffer: bytearray) -> None:
        """Take back a buffer nothing refers to any more, to reuse while there is room. Called
        while the buffer's reservation is still held (it is counted in ``in_use``)."""
        self._release_idle()
        if self.in_use + self._kept_bytes <= self.capacity:
            self._kept.append((time.monotonic(), buffer))
            self._kept_bytes += len(buffer)
            if self._expiry is None:
                self._expiry = asyncio.get_running_loop().call_later(KEEP_IDLE_S, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self._release_idle()
        if self._kept:
            self._expiry = asyncio.get_running_loop().call_later(KEEP_IDLE_S, self._expire)

    @property
    def kept_bytes(self) -> int:
        return self._kept_bytes

    def _release_idle(self) -> None:
        cutoff = time.monotonic() - KEEP_IDLE_S
        while self._kept and self._kept[0][0] < cutoff:
            _, dropped = self._kept.pop(0)
            self._kept_bytes -= len(dropped)
