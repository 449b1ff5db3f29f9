"""replicator: event-driven object replication across S3, GCS, Azure Blob Storage and file
systems, with a metadata catalog and consistency-lag tracking."""

__version__ = "0.1.0"
