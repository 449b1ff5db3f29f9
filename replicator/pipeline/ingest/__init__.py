"""Getting change notifications into Kafka: HTTP push receivers (``receivers``), consumers of
leased queues (``queue``: SQS, Azure Storage Queue, Pub/Sub pull) and a listing scanner
(``scan``). Every path parses with ``replicator.pipeline.events``, drops what no route takes,
publishes the rest to the changes topic keyed by source object URL, and parks what it cannot
use in the DLQ with the reason, so bad input never blocks ingestion and nothing is
acknowledged before Kafka has it. What each path holds unpublished is reported for the
watermark (``backlog``).

Import what you need from its modules: importing the package itself loads none of them, so a
command that reads a configuration or publishes does not pay for the HTTP receivers.
"""
