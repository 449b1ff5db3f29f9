"""Uncommitted blocks Azure discards and Azurite keeps.

Azure garbage-collects a blob's uncommitted blocks when a Put Blob lands on it ("If Put Blob
is called on the blob, any uncommitted blocks are garbage collected", Put Block's remarks);
Azurite 3.37 keeps them until a Put Block List or the blob's deletion. A replicator upload
aborted on a blob that is already committed leaves its staged blocks for the next write of
that blob to clear, the only way Azure offers short of deleting the replica. When that next
write is a Put Blob (a small object's copy), Azurite still shows the blocks while Azure would
not, and the chaos oracle's leftovers check would count an emulator's divergence.

``BlockLedger`` watches the Azure requests that a fault proxy forwarded, as the emulator
applied them (whatever the client was then told), and keeps the blocks Azure would have
discarded, so the oracle can tell those from blocks a real account would still hold.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import unquote

# (container, blob name, block id as the SDKs show it)
DiscardedBlock = tuple[str, str, str]


def _blob_of(path: str) -> tuple[str, str] | None:
    """(container, blob name) of a request path ``/account/container/blob``."""
    parts = unquote(path).lstrip("/").split("/", 2)
    if len(parts) < 3 or not parts[2]:
        return None
    return parts[1], parts[2]


def _block_id(wire: str) -> str:
    """The block id as the SDKs return it (they base64-encode ids on the wire)."""
    try:
        return base64.b64decode(wire, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return wire


class BlockLedger:
    """Blocks staged on each blob since its last commit, and those Azure would have dropped."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], set[str]] = {}
        self.discarded: set[DiscardedBlock] = set()

    def observe(
        self, method: str, path: str, query: Mapping[str, str], blob_type: str | None, status: int
    ) -> None:
        """One request the emulator answered with ``status``."""
        blob = _blob_of(path)
        if blob is None or not 200 <= status < 300:
            return
        comp = query.get("comp")
        if method == "PUT" and comp == "block" and "blockid" in query:
            block = _block_id(query["blockid"])
            self._pending.setdefault(blob, set()).add(block)
            self.discarded.discard((*blob, block))
        elif method == "PUT" and comp == "blocklist":
            self._pending.pop(blob, None)  # both Azure and Azurite drop the rest here
        elif method == "PUT" and comp is None and blob_type == "BlockBlob":
            # Put Blob (or Put Blob From URL): Azure drops what was staged, Azurite does not.
            self.discarded |= {(*blob, block) for block in self._pending.pop(blob, set())}
        elif method == "DELETE" and comp is None:
            self._pending.pop(blob, None)
