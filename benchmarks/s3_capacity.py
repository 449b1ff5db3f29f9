"""How many requests per second the test bed's S3 (moto) serves on its own, with no replicator
running: PUTs to a bucket whose notifications go to SQS (the event benchmark's load), and
HEADs. The event benchmark cannot offer more events per second than the first figure.

Usage: python -m benchmarks.s3_capacity [--requests 1000] [--clients 16]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

from replicator.devstack import DevStack, environment


def rate(requests: int, clients: int, call: Callable[[int], object]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(call, range(requests)))
    return requests / (time.perf_counter() - started)


def measure(requests: int, clients: int, env: dict[str, str]) -> dict[str, float]:
    def client(service: str) -> object:
        return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")

    s3, sqs = client("s3"), client("sqs")
    s3.create_bucket(Bucket="capacity")  # type: ignore[attr-defined]
    queue = sqs.create_queue(QueueName="capacity")["QueueUrl"]  # type: ignore[attr-defined]
    arn = sqs.get_queue_attributes(  # type: ignore[attr-defined]
        QueueUrl=queue, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(  # type: ignore[attr-defined]
        Bucket="capacity",
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    pool = [client("s3") for _ in range(clients)]
    body = os.urandom(1024)

    def put(n: int) -> object:
        return pool[n % clients].put_object(Bucket="capacity", Key=f"k{n}", Body=body)  # type: ignore[attr-defined]

    def head(n: int) -> object:
        return pool[n % clients].head_object(Bucket="capacity", Key=f"k{n}")  # type: ignore[attr-defined]

    return {
        "notified_puts_per_s": round(rate(requests, clients, put), 1),
        "heads_per_s": round(rate(requests, clients, head), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="replicator-bench-") as workdir:
        stack = DevStack(Path(workdir) / "stack", components=("s3",))
        with stack as state, environment(state.env):
            print(json.dumps(measure(args.requests, args.clients, state.env)))


if __name__ == "__main__":
    main()
