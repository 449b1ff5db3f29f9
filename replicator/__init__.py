"""replicator: event-driven object replication across S3, GCS, Azure Blob Storage and file
systems, with a metadata catalog and consistency-lag tracking.

Layers, each a package that imports only the ones below it (checked by import-linter)::

    cli        the command line and the demo: the only composition root for commands
    daemon     the long-running process: applier, deletions, backfill, HTTP, signals
    catalog    the metadata catalog (SQLite or PostgreSQL) and lag/watermark figures
    pipeline   notifications -> Kafka -> change events applied in key order
    engine     copying one object, verified

``errors`` is the root of the product's own errors, shared by every layer; ``devstack`` is the
local test bed, outside the product; ``connectors`` (a package beside this one) are the stores.
"""

__version__ = "0.1.0"
