"""Request bodies and response streams on aiohttp without copying object bytes.

Shared by the connectors whose SDKs send through aiohttp (S3, GCS, Azure):

* ``BufferPayload`` sends a buffer as memoryview slices, waiting for the socket between them.
  Handed a whole buffer, asyncio's socket transport (Python 3.11) copies whatever the socket
  does not take at once into its own buffer, then moves the rest of that buffer down after
  every send: for a 64 MiB part, about two more copies of the part and many memmoves. A slice
  at a time, at most one slice is ever copied and nothing is moved.
* ``body_chunks`` yields a response body in the pieces the connection received, without
  joining them; the caller copies each once into its own buffer.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.abc import AbstractStreamWriter

from connectors.base import Buffer

#: Bytes written to the transport at a time (then the writer waits until the socket took them).
SEND_SLICE = 256 * 1024
#: Smaller bodies go out in one write: slicing them buys nothing.
SLICED_ABOVE = SEND_SLICE


class BufferPayload(aiohttp.payload.Payload):
    """A bytes-like body sent in ``SEND_SLICE`` memoryview slices. Reusable: an SDK that
    retries a request sends it again from the start."""

    _autoclose = True

    def __init__(self, data: Buffer, *, content_type: str = "application/octet-stream") -> None:
        view = memoryview(data).cast("B")
        super().__init__(view, content_type=content_type)
        self._size = view.nbytes

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view: memoryview = self._value
        end = view.nbytes if content_length is None else min(content_length, view.nbytes)
        for start in range(0, end, SEND_SLICE):
            await writer.write(view[start : min(start + SEND_SLICE, end)])

    def seek(self, offset: int, whence: int = 0) -> int:
        """SDKs rewind a body before sending it again; every write sends it from the start."""
        return 0

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return bytes(self._value)


class BufferReader(io.RawIOBase):
    """A read-only file over a buffer, sharing its memory. For SDKs that take a bytes-like
    body only as ``bytes`` (botocore signs a ``bytearray`` body through a copy of it) but
    take any file; ``sliced`` turns it back into a ``BufferPayload`` before it is sent."""

    def __init__(self, data: Buffer) -> None:
        super().__init__()
        self.view = memoryview(data).cast("B")
        self._position = 0

    def __len__(self) -> int:
        return self.view.nbytes

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, into: Any) -> int:
        chunk = self.view[self._position : self._position + len(into)]
        into[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.view.nbytes}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        return self._position


def sliced(data: Any) -> Any:
    """``data`` as a ``BufferPayload`` when it is a large bytes-like body (or an unread
    ``BytesIO`` over one, which is how botocore wraps a bytes body), else unchanged."""
    if isinstance(data, io.BytesIO) and data.tell() == 0:
        # getvalue() hands back the bytes the BytesIO was made from, uncopied (getbuffer(),
        # which aiohttp would use, copies them first).
        data = data.getvalue()
    elif isinstance(data, BufferReader):
        data = data.view
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > SLICED_ABOVE:
        return BufferPayload(data)
    return data


async def body_chunks(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body in the pieces the connection delivered (``readany`` would join them)."""
    while True:
        chunk, _ = await content.readchunk()
        if not chunk:
            if content.at_eof():
                return
            continue
        yield chunk
