"""The order of an ordered upload's parts (``ObjectStore.create_ordered_upload``): the
engine reads them ahead while each waits its turn to be sent."""

from __future__ import annotations

import asyncio


class InOrder:
    """Lets the parts of an ordered upload through one at a time, in part-number order."""

    def __init__(self) -> None:
        self._next = 1
        self._moved = asyncio.Condition()

    async def turn(self, number: int) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: self._next == number)

    async def done(self, number: int) -> None:
        async with self._moved:
            self._next = number + 1
            self._moved.notify_all()
