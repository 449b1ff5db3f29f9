"""Azure and file members of a replication group on the test bed, with what stands in for
their notifications and the outside counters of every write each one takes.

Azurite sends no Event Grid events and keeps no versions, so ``EventGridProxy`` stands in
front of it, for the users' clients and the daemon alike: every write the blob service
accepted (Put Blob, Put Block List: ``BlobCreated``) and every blob it deleted
(``BlobDeleted``) becomes the Event Grid event Azure would send, pushed in order to the
daemon's ``/ingest/azure`` (held while no daemon listens, as Event Grid retries), and every
write is counted with the replica mark it carried, as the store received it.

A file member has no notifications: its users' writes reach the group through a listing scan
(``replicator scan``). ``FileWrites`` counts what lands on its keys with inotify (the kernel,
outside the project's code): the file store writes every object to a staging file first and
then links it (a key it must create) or renames it (one it replaces) into place, so every
replica is one name created or moved in; the users write only while no daemon runs, and their
events are taken apart then.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.forwarding import ForwardingProxy


@dataclass
class BlobWrite:
    key: str
    # The member the write is a replica of (its ``replicator_source`` mark), None: a user's.
    replica_of: str | None


class EventGridProxy(ForwardingProxy):
    """Azurite's blob service behind a proxy that plays Event Grid (module docstring)."""

    def __init__(
        self,
        *,
        upstream: str,
        account: str,
        container: str,
        endpoint: Callable[[], str | None],
        token: str,
    ) -> None:
        super().__init__(upstream)
        self.account = account
        self.container = container
        self.endpoint = endpoint
        self.token = token
        self.writes: list[BlobWrite] = []
        self.pending: list[dict[str, object]] = []
        self._sequence = 0
        self._pusher: asyncio.Task[None] | None = None
        self._events: aiohttp.ClientSession | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        url = await super().start(host, port)
        self._events = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._pusher = asyncio.create_task(self._push_loop())
        return url

    async def close(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
            await asyncio.gather(self._pusher, return_exceptions=True)
        if self._events is not None:
            await self._events.close()
        await super().close()

    def copies(self, key: str) -> Counter[str | None]:
        """The writes ``key`` took, by the member each was a replica of (None: users')."""
        return Counter(w.replica_of for w in self.writes if w.key == key)

    def diagnosis(self) -> str:
        """What a failed wait reports: the events held back and how the pushing ended."""
        pusher = self._pusher
        ended = None if pusher is None or not pusher.done() else pusher.exception()
        return f"{len(self.pending)} Event Grid events held, pushing ended with {ended!r}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status, headers, payload = await self.forward(request, body)
        self._observe(request, body, status, headers)
        return await self.answer(request, status, headers, payload)

    def _observe(
        self, request: web.Request, body: bytes, status: int, headers: CIMultiDict[str]
    ) -> None:
        """Record the blob change a request made, as Event Grid would report it."""
        prefix = f"/{self.account}/{self.container}/"
        path = request.rel_url.raw_path
        query = request.rel_url.query
        if not path.startswith(prefix) or "restype" in query:
            return
        key = urllib.parse.unquote(path[len(prefix) :])
        comp = query.get("comp")
        created = request.method == "PUT" and comp in (None, "blocklist") and status == 201
        deleted = request.method == "DELETE" and comp is None and status == 202
        if not created and not deleted:
            return
        etag = headers.get("ETag", "")
        data: dict[str, object] = {
            "api": ("PutBlockList" if comp else "PutBlob") if created else "DeleteBlob",
            "requestId": uuid.uuid4().hex,
            "eTag": etag,
            "blobType": "BlockBlob",
            "url": f"https://{self.account}.blob.core.windows.net{path[len(self.account) + 1 :]}",
            "sequencer": f"{self._sequence:032x}",
        }
        self._sequence += 1
        if created:
            if comp is None:
                # A block list's length is the blocks' (events are hints: none is fine).
                data["contentLength"] = len(body)
            data["contentType"] = "application/octet-stream"
            replica_of = request.headers.get("x-ms-meta-replicator_source")
            self.writes.append(BlobWrite(key, replica_of))
        self.pending.append(
            {
                "topic": "/subscriptions/test/resourceGroups/test/providers/"
                f"Microsoft.Storage/storageAccounts/{self.account}",
                "subject": f"/blobServices/default/containers/{self.container}/blobs/{key}",
                "eventType": "Microsoft.Storage.BlobCreated"
                if created
                else "Microsoft.Storage.BlobDeleted",
                "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "id": str(uuid.uuid4()),
                "data": data,
                "dataVersion": "",
                "metadataVersion": "1",
            }
        )

    async def push_pending(self) -> bool:
        """Deliver every event held so far to the daemon's receiver (True), or keep them (no
        daemon listening)."""
        endpoint = self.endpoint()
        if endpoint is None or not self.pending:
            return not self.pending
        assert self._events is not None
        due, self.pending = self.pending, []
        try:
            async with self._events.post(
                endpoint, json=due, headers={"Authorization": f"Bearer {self.token}"}
            ) as response:
                assert response.status < 300, await response.text()
        except aiohttp.ClientConnectionError:
            self.pending = due + self.pending
            return False
        return True

    async def _push_loop(self) -> None:
        while True:
            await self.push_pending()
            # Event Grid delivers within moments of a change; this is its delivery delay.
            await asyncio.sleep(0.2)


_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_EVENT = struct.Struct("iIII")


class FileWrites:
    """What lands on the keys of one directory, seen by inotify (module docstring)."""

    def __init__(self, root: Path) -> None:
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        watch = self._libc.inotify_add_watch(
            self._fd, str(root).encode(), _IN_CREATE | _IN_MOVED_TO
        )
        if watch < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {root}")
        self.users: Counter[str] = Counter()
        self.replicas: Counter[str] = Counter()

    def drain(self, *, users: bool = False) -> None:
        """Take every event the kernel queued so far: the users' (made while no daemon ran)
        or replicas."""
        counts = self.users if users else self.replicas
        while True:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            offset = 0
            while offset < len(chunk):
                _, mask, _, length = _EVENT.unpack_from(chunk, offset)
                raw = chunk[offset + _EVENT.size : offset + _EVENT.size + length]
                name = raw.rstrip(b"\0").decode()
                offset += _EVENT.size + length
                if mask & (_IN_CREATE | _IN_MOVED_TO):
                    counts[name] += 1

    def close(self) -> None:
        os.close(self._fd)
