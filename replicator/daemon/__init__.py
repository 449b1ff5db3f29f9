"""The long-running process that composes the rest: its configuration, the applier (one change
event -> copies or deletions at every destination -> catalog rows), the deletion guard and
sweeper, the one-shot backfill that applies listing events in process, and the daemon itself
(consumer, SQS pollers, sweeper, health/metrics/catalog/ingest HTTP, signals).

May import: ``replicator.catalog``, ``replicator.pipeline``, ``replicator.engine``,
``connectors`` and ``replicator.errors``.
"""
