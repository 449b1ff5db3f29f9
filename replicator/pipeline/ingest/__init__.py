"""Getting change notifications into Kafka: HTTP push receivers, an SQS poller and a listing
scanner. Every path parses with ``replicator.pipeline.events``, drops what no route takes,
publishes the rest to the changes topic keyed by source object URL, and parks what it cannot
parse in the DLQ with the reason, so bad input never blocks ingestion and nothing is
acknowledged before Kafka has it.
"""

from replicator.pipeline.ingest.publisher import Parser, Publisher
from replicator.pipeline.ingest.receivers import add_ingest_routes
from replicator.pipeline.ingest.scan import scan
from replicator.pipeline.ingest.sqs import SQSPoller

__all__ = ["Parser", "Publisher", "SQSPoller", "add_ingest_routes", "scan"]
