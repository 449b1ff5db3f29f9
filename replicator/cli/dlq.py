"""``replicator dlq list|show|replay``: the dead-letter topic, each record with its reason, and
its replay to the changes topic once what refused it is fixed.

The broker and topics are the daemon's (``--config`` and the ``REPLICATOR_*`` environment).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from replicator.engine.units import parse_duration
from replicator.errors import ConfigError

if TYPE_CHECKING:
    from replicator.daemon.config import DaemonConfig
    from replicator.pipeline.bus import KafkaSettings
    from replicator.pipeline.dlq import DeadLetter

dlq_app = typer.Typer(
    help="The dead-letter topic: list and show dead-lettered records with their reason, "
    "replay them to the changes topic after a fix.",
    no_args_is_help=True,
)

Config = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Daemon configuration file (TOML): broker, topics."),
]
Since = Annotated[
    str | None,
    typer.Option(help="Only records dead-lettered this recently (e.g. 2h) or since a time."),
]
Reason = Annotated[
    str | None, typer.Option(help="Only records whose reason or error contains this text.")
]
FromOffset = Annotated[int, typer.Option("--from-offset", min=0, help="First DLQ offset.")]
ToOffset = Annotated[
    int | None, typer.Option("--to-offset", min=0, help="Last DLQ offset (included).")
]


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.now(UTC) - parse_duration(value)
    except ConfigError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r} is neither a duration (2h) nor a time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _kafka(config: Path | None) -> tuple[DaemonConfig, KafkaSettings]:
    from replicator.daemon.config import load_daemon_config
    from replicator.daemon.service import Daemon

    settings = load_daemon_config(config)
    return settings, Daemon(settings).kafka_settings()


def _read(
    config: Path | None,
    since: str | None,
    reason: str | None,
    from_offset: int,
    to_offset: int | None,
) -> tuple[DaemonConfig, KafkaSettings, list[DeadLetter]]:
    from replicator.pipeline.dlq import dead_letters

    settings, kafka = _kafka(config)
    found = asyncio.run(
        dead_letters(
            kafka,
            settings.kafka.dlq_topic,
            since=_since(since),
            reason=reason,
            from_offset=from_offset,
            to_offset=to_offset,
        )
    )
    return settings, kafka, found


def _line(letter: DeadLetter) -> str:
    when = letter.dead_lettered_at.isoformat(timespec="seconds") if letter.dead_lettered_at else "-"
    key = letter.key.decode("utf-8", errors="backslashreplace") if letter.key else "-"
    return f"{letter.position}  {when}  {key}  {letter.error}: {letter.reason}"


@dlq_app.command("list")
def dlq_list(
    config: Config = None,
    since: Since = None,
    reason: Reason = None,
    from_offset: FromOffset = 0,
    to_offset: ToOffset = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Each dead-lettered record: position (partition:offset), when, key, error and reason."""
    for letter in _read(config, since, reason, from_offset, to_offset)[2]:
        typer.echo(json.dumps(letter.as_dict()) if json_output else _line(letter))


@dlq_app.command("show")
def dlq_show(
    position: Annotated[str, typer.Argument(help="PARTITION:OFFSET, as dlq list prints it.")],
    config: Config = None,
) -> None:
    """One dead-lettered record whole: its headers' reason and origin, and its value."""
    partition, _, offset = position.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise ConfigError(f"position {position!r} is not PARTITION:OFFSET")
    found = [
        letter
        for letter in _read(config, None, None, int(offset), int(offset))[2]
        if letter.partition == int(partition)
    ]
    if not found:
        raise ConfigError(f"no dead letter at {position}")
    typer.echo(json.dumps(found[0].as_dict(with_value=True), indent=2))


@dlq_app.command("replay")
def dlq_replay(
    config: Config = None,
    since: Since = None,
    reason: Reason = None,
    from_offset: FromOffset = 0,
    to_offset: ToOffset = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Publish the chosen dead letters to the changes topic again (after a fix): the daemons
    apply them as any event (reading the source afresh; a duplicate is harmless)."""
    from replicator.pipeline.bus import AsyncProducer
    from replicator.pipeline.dlq import replay

    chosen = since or reason or from_offset or to_offset is not None
    if not chosen and not all_:
        raise ConfigError("choose what to replay (--since, --reason, offsets) or give --all")
    settings, kafka, found = _read(config, since, reason, from_offset, to_offset)

    async def main() -> tuple[int, list[DeadLetter]]:
        producer = AsyncProducer(kafka)
        try:
            return await replay(producer, found, settings.kafka.changes_topic)
        finally:
            await producer.close()

    replayed, skipped = asyncio.run(main())
    for letter in skipped:
        typer.echo(f"not replayed (its value was too large to keep): {_line(letter)}", err=True)
    typer.echo(json.dumps({"replayed": replayed, "not_replayable": len(skipped)}))
