"""The long-running process that composes the rest: its configuration, the applier (one change
event -> copies or deletions at every destination -> catalog rows), the deletion guard and
sweeper, the one-shot backfill that applies listing events in process, and the daemon itself
(consumer, SQS pollers, sweeper, signals), with its admin and ingest listeners (``http``),
readiness (``readiness``), metrics registry (``metrics``) and Kafka topic checks at start
(``kafka_setup``).

May import: ``replicator.catalog``, ``replicator.pipeline``, ``replicator.engine``,
``connectors`` and ``replicator.errors``.
"""
