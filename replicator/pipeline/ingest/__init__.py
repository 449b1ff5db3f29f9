"""Getting change notifications into Kafka: HTTP push receivers (``receivers``), consumers of
leased queues (``queue``: SQS, Azure Storage Queue, Pub/Sub pull) and a listing scanner
(``scan``). Every path parses with ``replicator.pipeline.events``, drops what no route takes,
publishes the rest to the changes topic keyed by source object URL, and parks what it cannot
use in the DLQ with the reason, so bad input never blocks ingestion and nothing is
acknowledged before Kafka has it. What each path holds unpublished is reported for the
watermark (``backlog``).
"""

from replicator.pipeline.ingest.backlog import IngestBacklog
from replicator.pipeline.ingest.publisher import Parser, Publisher
from replicator.pipeline.ingest.receivers import add_ingest_routes
from replicator.pipeline.ingest.scan import scan
from replicator.pipeline.ingest.sqs import SQSPoller

__all__ = ["IngestBacklog", "Parser", "Publisher", "SQSPoller", "add_ingest_routes", "scan"]
