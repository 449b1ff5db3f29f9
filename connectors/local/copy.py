"""Server-side copies between file stores: a kernel copy, read back once to verify."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from connectors.base import (
    ChecksumKind,
    IntegrityError,
    ObjectAttributes,
    ObjectMeta,
    PreconditionFailed,
)
from connectors.kernel_copy import SourceShrank, copy_and_read_back
from connectors.local.checksums import crc32c_b64

if TYPE_CHECKING:
    from connectors.local.store import LocalStore


class LocalServerSideCopy:
    """The server-side copies into one store."""

    def __init__(self, store: LocalStore) -> None:
        self._store = store

    async def copy(
        self,
        source: LocalStore,
        source_key: str,
        dest_key: str,
        *,
        if_match: str | None,
        attributes: ObjectAttributes | None,
        inspect: Callable[[memoryview, int], None] | None,
        extra_metadata: Callable[[], Mapping[str, str]] | None,
        create_only: bool,
        dest_if_match: str | None,
    ) -> ObjectMeta:
        def work() -> ObjectMeta:
            with source._open_object(source_key) as (src_fd, st):
                source_url = source.url_for(source_key)
                if if_match is not None and self._store._etag(st) != if_match:
                    raise PreconditionFailed(f"etag is no longer {if_match}", url=source_url)
                before = source._meta(source_key, src_fd, st)
                keep = attributes or before.attributes

                def write(fd: int) -> int:
                    try:
                        crc = copy_and_read_back(src_fd, fd, st.st_size, inspect)
                    except SourceShrank as exc:
                        raise PreconditionFailed(f"{exc}: it changed", url=source_url) from None
                    if self._store._etag(os.fstat(src_fd)) != self._store._etag(st):
                        raise PreconditionFailed("changed while being copied", url=source_url)
                    recorded = before.checksums.get(ChecksumKind.CRC32C)
                    if recorded is not None and recorded != crc32c_b64(crc):
                        raise IntegrityError(
                            f"the copy reads back with CRC32C {crc32c_b64(crc)}, the source "
                            f"records {recorded}",
                            url=self._store.url_for(dest_key),
                        )
                    return crc

                return self._store._writes.write_file(
                    dest_key, write, keep, create_only, dest_if_match, extra_metadata
                )

        meta: ObjectMeta = await self._store._run(dest_key, work)
        return meta
