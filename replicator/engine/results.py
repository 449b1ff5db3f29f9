"""What a copy returns: ``CopyResult``, and the identity of the source version it copied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from connectors.base import ObjectMeta
from replicator.engine.planner import Strategy


@dataclass(frozen=True)
class CopyResult:
    status: Literal["copied", "skipped"]
    source: ObjectMeta
    destination: ObjectMeta | None
    strategy: Strategy | None = None
    parts: int = 0
    parts_resumed: int = 0
    bytes_transferred: int = 0
    fingerprint: str | None = None
    seconds: float = 0.0
    reason: str | None = None
    #: A multipart copy sent in order into one upload (GCS: an ordinary object, not composed).
    ordered_upload: bool = False

    @property
    def source_version(self) -> str:
        return version_id(self.source)

    def summary(self) -> dict[str, object]:
        rate = self.bytes_transferred / self.seconds / 1e6 if self.seconds > 0 else 0.0
        return {
            "status": self.status,
            "reason": self.reason,
            "source": self.source.url,
            "source_version": self.source_version,
            "destination": self.destination.url if self.destination else None,
            "strategy": self.strategy.value if self.strategy else None,
            "bytes": self.source.size,
            "bytes_transferred": self.bytes_transferred,
            "parts": self.parts,
            "parts_resumed": self.parts_resumed,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(rate, 1),
            "fingerprint": self.fingerprint,
            "ordered_upload": self.ordered_upload,
        }


def version_id(meta: ObjectMeta) -> str:
    """The identity of an object's content version: the store's version, else its etag."""
    return meta.version or meta.etag or ""
