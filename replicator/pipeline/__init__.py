"""The event pipeline: from bucket notifications to change events applied in key order.

Owns: ``events`` (every cloud's notification normalised into a ``ChangeEvent``; pure),
``rules`` (routes, residency, which destinations a source object goes to; pure), ``ingest``
(HTTP push receivers, the SQS poller and the listing scan, publishing to Kafka), ``bus`` (the
only importer of confluent_kafka: topics, the idempotent producer, the consumer), ``worker``
(per-key ordered, bounded concurrency, retries, the DLQ) and ``offsets`` (which offsets may be
committed; pure).

May import: ``replicator.engine``, ``connectors`` and ``replicator.errors``; never the catalog
or the daemon: what a record does is the handler the daemon gives the worker.
"""
