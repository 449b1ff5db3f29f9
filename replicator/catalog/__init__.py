"""The metadata catalog of the federated data lake: datasets mapped to store locations, every
object with its replicas and their freshness, per-key high-water marks, resumable uploads,
checkpoints; on SQLite (embedded) or PostgreSQL (shared by several daemons).

SQL drivers are used only inside this package.
"""

from replicator.catalog.database import DEFAULT_CATALOG_URL
from replicator.catalog.journal import CatalogJournal
from replicator.catalog.model import (
    Acceptance,
    CatalogError,
    Change,
    Dataset,
    Location,
    LocationSpec,
    LocationStatus,
    ObjectEntry,
    Replica,
    ReplicaState,
    Role,
    ScheduledDelete,
    StaleReplica,
    UnknownDataset,
    UnknownLocation,
)
from replicator.catalog.repository import Catalog, open_catalog
from replicator.catalog.sequencer import sequencer_from_time, sequencer_key

__all__ = [
    "DEFAULT_CATALOG_URL",
    "Acceptance",
    "Catalog",
    "CatalogError",
    "CatalogJournal",
    "Change",
    "Dataset",
    "Location",
    "LocationSpec",
    "LocationStatus",
    "ObjectEntry",
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
