"""The parts topic: the tasks of striped copies (``replicator.engine.striping``) on their way
to every daemon of the group.

Each task is one JSON record keyed by its upload and part, so the group's partitions spread
one object's parts over every daemon. Records are parsed strictly: a task from anything but a
coordinator is a ``ParseError`` (dead-lettered with the reason), never a crash.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from replicator.engine.striping import PartTask
from replicator.pipeline.bus import AsyncProducer
from replicator.pipeline.events import ParseError

PARTS_TOPIC = "replicator.parts"
# A task names two URLs and an upload id: far below this.
MAX_TASK_BYTES = 64 * 1024

_TEXT = ("source_root", "source_key", "dest_root", "dest_key", "upload_id", "source_version")
_OPTIONAL_TEXT = ("etag", "version")
_NUMBERS = ("size", "part_size", "number", "offset", "length")


def encode_task(task: PartTask) -> bytes:
    # ASCII: a key is opaque and may hold anything JSON can escape.
    return json.dumps(asdict(task)).encode()


def decode_task(payload: bytes) -> PartTask:
    """The inverse of ``encode_task``, strict: anything else is a ``ParseError``."""
    if len(payload) > MAX_TASK_BYTES:
        raise ParseError(f"part task of {len(payload)} bytes exceeds {MAX_TASK_BYTES} bytes")
    try:
        raw: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ParseError(f"part task is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ParseError("part task is not a JSON object")
    expected = {field.name for field in fields(PartTask)}
    if set(raw) != expected:
        raise ParseError(f"part task fields {sorted(raw)} are not {sorted(expected)}")
    for name in _TEXT:
        if not isinstance(raw[name], str) or not raw[name]:
            raise ParseError(f"part task {name} is not a non-empty string")
    for name in _OPTIONAL_TEXT:
        if raw[name] is not None and not isinstance(raw[name], str):
            raise ParseError(f"part task {name} is not a string or null")
    for name in _NUMBERS:
        value = raw[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ParseError(f"part task {name} is not a whole number >= 0")
    task = PartTask(**raw)
    if task.number < 1 or task.length < 1 or task.end > task.size:
        raise ParseError(
            f"part task {task.number} ({task.offset}+{task.length}) is not a part of "
            f"{task.size} bytes"
        )
    return task


class PartTaskPublisher:
    """Publishes a coordinator's part tasks on the parts topic (a ``PartPublisher``); returns
    once the broker has them all."""

    def __init__(self, producer: AsyncProducer, topic: str = PARTS_TOPIC) -> None:
        self.producer = producer
        self.topic = topic

    async def publish(self, tasks: Sequence[PartTask]) -> None:
        await asyncio.gather(
            *(
                self.producer.send(
                    self.topic,
                    f"{task.dest_url}#{task.number}".encode(errors="surrogatepass"),
                    encode_task(task),
                )
                for task in tasks
            )
        )
