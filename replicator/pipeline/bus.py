"""Kafka: topics, an idempotent keyed producer and a consumer whose blocking calls stay off the
event loop. The only module that imports confluent_kafka.

librdkafka handles are used from one dedicated thread each (the producer's poll thread, the
consumer's call thread) so the asyncio loop never blocks on the network and callbacks never run
concurrently with other calls on the same handle. Rebalance callbacks run in the consumer
thread; they hand the partitions to a ``RebalanceListener`` on the loop and wait (bounded) for
their work to be finished or cancelled, commit what finished, and only then let the partitions
go (see ``ownership``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from structlog.typing import FilteringBoundLogger

from replicator.errors import DependencyUnavailable, ReplicatorError

log = structlog.get_logger(__name__)

CHANGES_TOPIC = "replicator.changes"
DLQ_TOPIC = "replicator.dlq"


class BusError(ReplicatorError):
    """Kafka refused or could not complete an operation. ``record_too_large``: the broker
    refuses this record for its size, so sending it again cannot succeed."""

    def __init__(self, message: str, *, record_too_large: bool = False) -> None:
        super().__init__(message)
        self.record_too_large = record_too_large


class BrokerUnreachable(BusError, DependencyUnavailable):
    """No broker answered a metadata request in time."""


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str
    group_id: str = "replicator"
    # Real Kafka requires session.timeout.ms >= 6000 by default; the local broker accepts less
    # and rebalances much faster with it (KAFKA.md), so tests lower it.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 300_000
    assignment_strategy: str = "range,roundrobin"
    # How long the broker may hold a fetch that finds nothing new. Apache Kafka answers a held
    # fetch as soon as records arrive, so there this only sets the idle request rate; the
    # local test broker (Tansu) does not, so there it adds up to the wait to every delivery
    # (a median of ~215 ms with librdkafka's 500 ms default, ~15 ms with 100 ms).
    fetch_wait_max_ms: int = 100
    # Any other librdkafka properties (security.protocol, sasl.*, ssl.*, client.id, ...),
    # secrets included: never in a repr, never logged.
    extra: Mapping[str, str] | None = field(default=None, repr=False)
    # librdkafka's statistics JSON, every statistics_interval_ms, on the client's thread.
    statistics: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    statistics_interval_ms: int = 15_000

    def common(self) -> dict[str, Any]:
        properties = {
            "bootstrap.servers": self.bootstrap,
            **(self.extra or {}),
            "logger": LIBRDKAFKA_LOG,
        }
        if self.statistics is not None:
            properties["stats_cb"] = self.statistics
            properties["statistics.interval.ms"] = self.statistics_interval_ms
        return properties


class LibrdkafkaLog:
    """librdkafka's own log lines (confluent-kafka's ``logger`` hook, served by each client's
    poll) as structlog events, so they come out in the same format (JSON in containers) as
    everything else instead of raw on stderr."""

    def __init__(self, logger: FilteringBoundLogger | None = None) -> None:
        self._logger = logger

    def log(self, level: int, fmt: str, *args: object) -> None:
        logger = self._logger or log
        # librdkafka logs every failed connection attempt as an error and retries it; the
        # failures that matter reach the daemon as errors of their own (error_cb, exceptions).
        level = min(level, logging.WARNING)
        if len(args) == 3:
            facility, client, message = args
            logger.log(level, "librdkafka", facility=facility, client=client, message=message)
        else:
            logger.log(level, "librdkafka", message=fmt % args if args else fmt)


LIBRDKAFKA_LOG = LibrdkafkaLog()


def check_client_properties(properties: Mapping[str, str]) -> list[str]:
    """What librdkafka says of ``properties`` (unknown names, invalid values), checked by
    building a client that never connects: one line per problem."""
    problems = []
    # One at a time, so every unknown name or bad value is reported at once...
    for name, value in properties.items():
        try:
            Producer({name: value, "logger": LIBRDKAFKA_LOG})
        except KafkaException as exc:
            problems.append(f"kafka.librdkafka: {exc.args[0].str()}")
    if problems:
        return problems
    # ...then together: TLS files are loaded, and combinations checked, only then.
    try:
        Producer({**properties, "logger": LIBRDKAFKA_LOG})
    except KafkaException as exc:
        problems.append(f"kafka.librdkafka: {exc.args[0].str()}")
    return problems


@dataclass(frozen=True)
class TopicLayout:
    """What a topic should look like: partitions, and a replication factor (None: the
    broker's default)."""

    partitions: int
    replication_factor: int | None = None


def ensure_topics(
    settings: KafkaSettings, topics: Mapping[str, int | TopicLayout], timeout: float = 30
) -> list[str]:
    """Create missing topics with the intended layout (auto-creation would pick its own);
    return, one line each, how existing topics fall short of it (fewer partitions, fewer
    replicas), for the caller to report: nothing existing is changed."""
    admin = AdminClient(settings.common())
    layouts = {
        name: layout if isinstance(layout, TopicLayout) else TopicLayout(layout)
        for name, layout in topics.items()
    }
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerUnreachable(
            f"cannot reach Kafka at {settings.bootstrap} within {timeout:g} s: {exc.args[0].str()}"
        ) from None
    problems = []
    for name, layout in layouts.items():
        metadata = existing.get(name)
        if metadata is None:
            continue
        partitions = len(metadata.partitions)
        if partitions < layout.partitions:
            problems.append(
                f"topic {name} has {partitions} partitions, fewer than the "
                f"{layout.partitions} configured: at most {partitions} daemons can share its work"
            )
        replicas = min((len(p.replicas) for p in metadata.partitions.values()), default=0)
        if layout.replication_factor is not None and replicas < layout.replication_factor:
            problems.append(
                f"topic {name} has {replicas} replicas of a partition, fewer than the "
                f"{layout.replication_factor} configured"
            )
    wanted = [
        NewTopic(name, layout.partitions, layout.replication_factor or -1)
        for name, layout in layouts.items()
        if name not in existing
    ]
    if not wanted:
        return problems
    futures = admin.create_topics(wanted, operation_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BusError(f"cannot create topic {name}: {exc}") from exc
    return problems


def topic_partitions(settings: KafkaSettings, topic: str, timeout: float = 30) -> int:
    """How many partitions ``topic`` has (0 if it does not exist)."""
    metadata = AdminClient(settings.common()).list_topics(topic, timeout=timeout)
    found = metadata.topics.get(topic)
    return len(found.partitions) if found is not None and found.error is None else 0


def group_members(settings: KafkaSettings, group: str, timeout: float = 30) -> int:
    """How many members the consumer group has now (0 if it does not exist yet)."""
    admin = AdminClient(settings.common())
    future = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
    try:
        description = future.result(timeout=timeout)
    except KafkaException as exc:
        if exc.args[0].code() in (KafkaError.GROUP_ID_NOT_FOUND, KafkaError._NOT_IMPLEMENTED):
            return 0
        raise BusError(f"cannot describe consumer group {group}: {exc}") from exc
    return len(description.members)


class AsyncProducer:
    """An idempotent producer; ``send`` resolves when the broker has the record (acks=all).

    A fatal error (the idempotent producer's sequence numbers out of order after the broker
    lost or rolled back its state) leaves a librdkafka producer unable to send ever again; a
    broker that no longer knows the producer's id can keep it retrying without end (it bumps
    its epoch, the broker answers "unknown producer id" again) until each record times out.
    On either (a fatal error, a delivery timed out) the poll thread replaces the producer,
    whose successor starts with a fresh producer id, and fails every delivery still awaited
    from the old one (BusError, which the ingest paths send again): no send waits for ever and
    the process goes on publishing. Records of one key may then be reordered across the
    replacement; the applier orders changes by their sequencers, not by their arrival.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._config = {
            **settings.common(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "error_cb": self._on_error,
        }
        self._lock = threading.Lock()
        self._producer = Producer(self._config)
        self._generation = 0
        self._broken: KafkaError | None = None
        # Deliveries awaited: token -> (producer generation, the future to settle).
        self._awaiting: dict[int, tuple[int, _Delivery]] = {}
        self._tokens = itertools.count()
        self.replaced = 0
        self._running = True
        self._thread = threading.Thread(target=self._poll, name="kafka-producer", daemon=True)
        self._thread.start()

    def _on_error(self, error: KafkaError) -> None:
        log.warning("kafka producer error", error=str(error), fatal=error.fatal())
        if error.fatal():
            self._broken = error

    def _poll(self) -> None:
        while self._running:
            try:
                self._producer.poll(0.05)
            except KafkaException as exc:
                error = exc.args[0]
                if not error.fatal():
                    log.warning("kafka producer poll failed", error=str(error))
                    continue
                self._broken = error
            # Replaced here, between polls, never from a callback inside one.
            if self._broken is not None:
                self._replace(self._broken)

    def _replace(self, error: KafkaError) -> None:
        """Swap the failed producer for a new one; fail what the old one still owed."""
        with self._lock:
            old, old_generation = self._producer, self._generation
            self._producer = Producer(self._config)
            self._generation += 1
            self._broken = None
            stranded = [
                token
                for token, (generation, _) in self._awaiting.items()
                if generation == old_generation
            ]
            owed = [self._awaiting.pop(token)[1] for token in stranded]
        self.replaced += 1
        log.error(
            "Kafka producer cannot deliver; replaced by a new one",
            error=error.str(),
            deliveries_failed=len(owed),
        )
        for loop, future in owed:
            outcome = BusError(f"delivery failed: the producer was replaced ({error.str()})")
            loop.call_soon_threadsafe(_settle, future, outcome)
        old.purge(in_queue=True, in_flight=True, blocking=False)
        old.poll(0)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> tuple[int, int]:
        """Produce one record; returns (partition, offset) once it is acknowledged."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[tuple[int, int]] = loop.create_future()
        token = next(self._tokens)

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            with self._lock:
                self._awaiting.pop(token, None)
            if error is not None and error.code() == KafkaError._MSG_TIMED_OUT:
                self._broken = error
            if error is not None:
                outcome: BaseException | tuple[int, int] = BusError(
                    f"delivery to {topic} failed: {error}",
                    record_too_large=error.code() == KafkaError.MSG_SIZE_TOO_LARGE,
                )
            else:
                outcome = (message.partition() or 0, message.offset() or 0)
            loop.call_soon_threadsafe(_settle, delivered, outcome)

        while True:
            with self._lock:
                producer = self._producer
                self._awaiting[token] = (self._generation, (loop, delivered))
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers or []),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                await asyncio.sleep(0.01)  # local queue full: the poll thread drains it
            except KafkaException as exc:
                with self._lock:
                    self._awaiting.pop(token, None)
                error = exc.args[0]
                raise BusError(
                    f"cannot produce to {topic}: {error.str()}",
                    record_too_large=error.code() == KafkaError.MSG_SIZE_TOO_LARGE,
                ) from None
        return await delivered

    async def flush(self, within_s: float = 30) -> None:
        remaining = await asyncio.to_thread(self._producer.flush, within_s)
        if remaining:
            raise BusError(f"{remaining} records not delivered within {within_s} s")

    async def close(self) -> None:
        await self.flush()
        self._running = False
        await asyncio.to_thread(self._thread.join)


_Delivery = tuple[asyncio.AbstractEventLoop, "asyncio.Future[tuple[int, int]]"]


def _settle(
    future: asyncio.Future[tuple[int, int]], outcome: BaseException | tuple[int, int]
) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None


TopicPartitionKey = tuple[str, int]


class RebalanceListener(Protocol):
    """What the consumer tells of rebalances; ``revoked`` and ``lost`` run on the event loop
    while the consumer waits, at most ``release_deadline_s``, before the partitions go."""

    @property
    def release_deadline_s(self) -> float: ...

    def assigned(self, partitions: Sequence[TopicPartitionKey]) -> None: ...

    async def revoked(
        self, partitions: Sequence[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]: ...

    async def lost(self, partitions: Sequence[TopicPartitionKey]) -> None: ...


@dataclass(frozen=True)
class Polled:
    """What one ``poll`` brought: the records, and whether the commit it carried was accepted."""

    records: list[Record] = field(default_factory=list)
    committed: bool = False


def _record(message: Message) -> Record:
    raw = message.headers() or ()
    pairs = raw.items() if isinstance(raw, dict) else raw
    return Record(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value(),
        tuple((name, value) for name, value in pairs if isinstance(value, bytes)),
        message.timestamp()[1] if message.timestamp()[0] else None,
    )


def read_topic(
    settings: KafkaSettings,
    topic: str,
    *,
    from_offset: int = 0,
    to_offset: int | None = None,
    timeout_s: float = 30,
) -> list[Record]:
    """Every record of ``topic`` with an offset in [``from_offset``, ``to_offset``] (each
    partition's), read to the partitions' ends as the broker's fetches report them, without
    joining a group or committing anything (an operator looking at the DLQ). Blocking."""
    partitions = topic_partitions(settings, topic, timeout=timeout_s)
    if not partitions:
        raise BusError(f"topic {topic} does not exist")
    consumer = Consumer(
        {
            **settings.common(),
            "group.id": f"{settings.group_id}.reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        }
    )
    records: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, p, max(0, from_offset)) for p in range(partitions)])
        open_partitions = set(range(partitions))
        deadline = time.monotonic() + timeout_s
        while open_partitions:
            if time.monotonic() > deadline:
                raise BusError(f"reading {topic} did not reach its end within {timeout_s} s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(message.partition() or 0)
                else:
                    log.warning("kafka read error", topic=topic, error=str(error))
                continue
            offset = message.offset() or 0
            if to_offset is not None and offset > to_offset:
                open_partitions.discard(message.partition() or 0)
                continue
            records.append(_record(message))
    finally:
        consumer.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


class AsyncConsumer:
    """A consumer-group member with manual commits; every librdkafka call runs on one thread."""

    def __init__(self, settings: KafkaSettings, topics: Sequence[str]) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="kafka-consumer"
        )
        self._consumer = Consumer(
            {
                **settings.common(),
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # The local broker answers ListOffsets(latest) wrongly (KAFKA.md); earliest is also
                # the safe choice for a new group: nothing is skipped.
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.heartbeat_interval_ms,
                "max.poll.interval.ms": settings.max_poll_interval_ms,
                "fetch.wait.max.ms": settings.fetch_wait_max_ms,
                "partition.assignment.strategy": settings.assignment_strategy,
                "error_cb": lambda error: log.warning("kafka consumer error", error=str(error)),
            }
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: RebalanceListener | None = None
        # Counts rebalance callbacks; read and written on the consumer thread only.
        self._rebalances = 0

    async def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: func(*args, **kwargs))

    async def start(self, listener: RebalanceListener) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        await self._call(
            self._consumer.subscribe,
            self._topics,
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )

    def _callbacks(self) -> tuple[asyncio.AbstractEventLoop, RebalanceListener]:
        if self._loop is None or self._listener is None:
            raise BusError("the consumer was not started")
        return self._loop, self._listener

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        names = [(p.topic, p.partition) for p in partitions]
        log.info("partitions assigned", partitions=_describe(names))
        loop, listener = self._callbacks()
        # Scheduled before this poll's records are handed over (the loop runs callbacks in
        # order), so the listener knows the partitions before their first record.
        loop.call_soon_threadsafe(listener.assigned, names)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Runs in the consumer thread during poll: the listener finishes or cancels the work
        on the loop, what finished is committed, then the partitions go."""
        self._rebalances += 1
        names = [(p.topic, p.partition) for p in partitions]
        log.info("partitions revoked; finishing their work", partitions=_describe(names))
        positions = self._wait(names, lambda listener: listener.revoked(names))
        if positions:
            self._commit_now(positions)
        self._unpause(partitions)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        names = [(p.topic, p.partition) for p in partitions]
        log.warning("partitions lost; cancelling their work", partitions=_describe(names))
        self._wait(names, lambda listener: listener.lost(names))
        self._unpause(partitions)

    def _wait(
        self,
        names: list[TopicPartitionKey],
        work: Callable[[RebalanceListener], Any],
    ) -> Any:
        loop, listener = self._callbacks()
        future = asyncio.run_coroutine_threadsafe(work(listener), loop)
        try:
            return future.result(timeout=listener.release_deadline_s)
        except concurrent.futures.TimeoutError:
            log.error(
                "work of released partitions did not stop in time; it is redone by the next owner",
                partitions=_describe(names),
                alert=True,
            )
        except Exception as exc:
            log.error(
                "releasing partitions failed",
                partitions=_describe(names),
                error=repr(exc),
                alert=True,
            )
        return None

    def _unpause(self, partitions: list[TopicPartition]) -> None:
        """A paused partition stays paused in librdkafka across a reassignment: release it
        unpaused, so that its next owner (this member again, perhaps) fetches it."""
        try:
            self._consumer.resume(partitions)
        except KafkaException as exc:
            log.warning("cannot resume released partitions", error=str(exc))

    def _commit_now(self, positions: Mapping[TopicPartitionKey, int]) -> bool:
        """Commit synchronously; True only if the broker accepted every offset."""
        if not positions:
            return True
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # A group that moved on (UNKNOWN_MEMBER_ID, broker restart) refuses the commit;
            # the records will be redelivered and redoing them is idempotent.
            log.warning(
                "commit refused",
                error=str(exc),
                offsets={f"{t}[{p}]": o for (t, p), o in positions.items()},
            )
            return False
        refused = [r for r in results or [] if r.error is not None]
        if refused:
            log.warning(
                "commit refused for some partitions",
                errors={f"{r.topic}[{r.partition}]": str(r.error) for r in refused},
            )
            return False
        return True

    async def poll(
        self,
        wait_s: float = 0.5,
        commit: Mapping[TopicPartitionKey, int] | None = None,
        *,
        max_records: int = 500,
    ) -> Polled:
        """Commit ``commit`` (if any), wait up to ``wait_s`` for a record, then take up to
        ``max_records`` in all of those already fetched, without waiting for more (at least
        the first one that arrives: a record returned by librdkafka cannot be put back).

        Both run in one call on the consumer thread: a rebalance can only happen inside the
        poll, after the commit, so a commit computed before a revocation can never land after
        the revocation's own final commit and move the group's position back. Taking what is
        already fetched in the same call hands a burst to the loop in one hop instead of one
        hop per record, each of which waits its turn on a busy loop.
        """

        def commit_then_poll() -> tuple[list[Message], bool]:
            accepted = self._commit_now(commit) if commit else False
            return take(), accepted

        def take() -> list[Message]:
            first = self._consumer.poll(wait_s)
            if first is None:
                return []
            batch = [first]
            while len(batch) < max_records:
                before = self._rebalances
                message = self._consumer.poll(0)
                if self._rebalances != before:
                    # The records taken so far belong to the old assignment and are not
                    # tracked yet, so no commit went past them: whoever owns their partition
                    # now (this member included) reads them again. Keeping them could start
                    # an offset twice.
                    return [] if message is None else [message]
                if message is None:
                    break
                batch.append(message)
            return batch

        messages, accepted = await self._call(commit_then_poll)
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka poll error", error=str(error))
                continue
            records.append(_record(message))
        return Polled(records, accepted)

    async def pause(self, partitions: Sequence[TopicPartitionKey]) -> bool:
        """Stop fetching ``partitions`` (polling goes on); False if the consumer refused, e.g.
        for a partition a rebalance has just taken away."""
        done: bool = await self._call(self._flow, self._consumer.pause, partitions)
        return done

    async def resume(self, partitions: Sequence[TopicPartitionKey]) -> bool:
        done: bool = await self._call(self._flow, self._consumer.resume, partitions)
        return done

    @staticmethod
    def _flow(
        operation: Callable[[list[TopicPartition]], None],
        partitions: Sequence[TopicPartitionKey],
    ) -> bool:
        try:
            operation([TopicPartition(t, p) for t, p in partitions])
        except KafkaException as exc:
            log.warning(
                "cannot pause or resume partitions",
                partitions=_describe(partitions),
                error=str(exc),
            )
            return False
        return True

    async def close(self) -> None:
        """Leave the group (revoking, hence draining and committing, what it owns)."""
        await self._call(self._consumer.close)
        self._executor.shutdown(wait=True)


def _describe(partitions: Sequence[TopicPartitionKey]) -> list[str]:
    return [f"{topic}[{partition}]" for topic, partition in partitions]
