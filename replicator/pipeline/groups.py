"""The conflict rule of replication groups (pure).

Two members of a group may each be written (or have deleted) one key before either change
has been replicated. Every member must end with the same winner, whichever change reaches it
first, so the rule looks only at what both sides can read the same way at every member:

* a write's time is its object's last-modified time at the member written by the user (a
  replica carries it as the mark ``replicator_source_modified``); a deletion's time is its
  event time;
* times count in whole seconds, the coarsest precision a store reports (S3's Last-Modified
  header), so that every member compares the same values;
* the later change wins; at the same second, the member listed first in the group wins (in
  a chain of groups sharing members, the member that appears first in the configuration,
  every group of the chain counted in order: ``GroupTag.chain``); a replica forwarded along
  a chain counts as the write of the member its user wrote (``replicator_origin``).

A deletion takes part like a write: a deletion later than a write deletes it everywhere, a
write later than a deletion is replicated back to the member that deleted it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


def change_time(moment: datetime) -> datetime:
    """``moment`` as the rule compares it: UTC, whole seconds."""
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Contender:
    """One side of a conflict: a write (its version) or a deletion (no version) of one key at
    one member (its position in the group's member list)."""

    member: int
    time: datetime
    version: str | None

    @property
    def deleted(self) -> bool:
        return self.version is None

    def describe(self) -> str:
        what = "deletion" if self.deleted else f"write {self.version}"
        return f"{what} at member {self.member + 1} ({self.time.isoformat()})"


def winner(first: Contender, second: Contender) -> Contender:
    """The change every member keeps: the later one, and at the same second the one of the
    member listed first."""
    first_time, second_time = change_time(first.time), change_time(second.time)
    if first_time != second_time:
        return first if first_time > second_time else second
    return first if first.member <= second.member else second
