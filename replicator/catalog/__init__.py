"""The metadata catalog of the federated data lake: datasets mapped to store locations, every
object with its replicas and their freshness, per-key high-water marks, resumable uploads,
checkpoints; on SQLite (embedded) or PostgreSQL (shared by several daemons).

SQL drivers are used only inside this package.
"""

from typing import TYPE_CHECKING, Any

from replicator.catalog.model import (
    DEFAULT_CATALOG_URL,
    Acceptance,
    CatalogError,
    CatalogUnavailable,
    Change,
    Dataset,
    HeldChange,
    Location,
    LocationSpec,
    LocationStatus,
    ObjectEntry,
    Pause,
    PauseScope,
    Replica,
    ReplicaState,
    Role,
    ScheduledDelete,
    StaleReplica,
    UnknownDataset,
    UnknownLocation,
)
from replicator.catalog.sequencer import sequencer_from_time, sequencer_key

if TYPE_CHECKING:
    from replicator.catalog.journal import CatalogJournal
    from replicator.catalog.repository import Catalog, open_catalog

# Loaded on first use: the SQL libraries behind them slow every start of the CLI.
_LAZY = {
    "Catalog": "replicator.catalog.repository",
    "open_catalog": "replicator.catalog.repository",
    "CatalogJournal": "replicator.catalog.journal",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_CATALOG_URL",
    "Acceptance",
    "Catalog",
    "CatalogError",
    "CatalogJournal",
    "CatalogUnavailable",
    "Change",
    "Dataset",
    "HeldChange",
    "Location",
    "LocationSpec",
    "LocationStatus",
    "ObjectEntry",
    "Pause",
    "PauseScope",
    "Replica",
    "ReplicaState",
    "Role",
    "ScheduledDelete",
    "StaleReplica",
    "UnknownDataset",
    "UnknownLocation",
    "open_catalog",
    "sequencer_from_time",
    "sequencer_key",
]
