"""What a replication group's member route reconciles (pure): a destination member's key is
drift only when it lacks the source member's own write, and extra only when it holds a
replica of the source member's object."""

from __future__ import annotations

from connectors.base import ObjectAttributes, ObjectMeta
from replicator.daemon.reconcile.members import member_verdict, spreads
from replicator.engine.compare import Verdict
from replicator.pipeline.rules import GroupTag

SOURCE = "s3://lake/data/k"


def obj(url: str, etag: str, marks: dict[str, str] | None = None) -> ObjectMeta:
    user = {"replicator_fingerprint": "f", **(marks or {})}
    return ObjectMeta(url, "k", 3, etag, None, None, ObjectAttributes(user_metadata=user))


def replica_of(source: str, version: str) -> ObjectMeta:
    return obj(
        "gs://lake/data/k",
        "r",
        {"replicator_source": source, "replicator_source_version": version},
    )


OWN = obj(SOURCE, "v1")


def test_a_verified_replica_of_the_source_members_write_is_in_sync() -> None:
    assert member_verdict(SOURCE, OWN, replica_of(SOURCE, "v1")) is Verdict.SAME


def test_an_older_replica_or_another_write_is_different() -> None:
    """The applier then decides under the group's conflict rule."""
    assert member_verdict(SOURCE, OWN, replica_of(SOURCE, "v0")) is Verdict.DIFFERENT
    assert member_verdict(SOURCE, OWN, obj("gs://lake/data/k", "own")) is Verdict.DIFFERENT
    third = replica_of("az://lake@acct/data/k", "t1")
    assert member_verdict(SOURCE, OWN, third) is Verdict.DIFFERENT


def test_a_missing_key_is_missing() -> None:
    assert member_verdict(SOURCE, OWN, None) is Verdict.MISSING


def test_only_a_replica_of_the_source_members_object_is_extra() -> None:
    assert member_verdict(SOURCE, None, replica_of(SOURCE, "v1")) is Verdict.EXTRA
    # A member's own write, or a third member's replica: not this route's to delete.
    assert member_verdict(SOURCE, None, obj("gs://lake/data/k", "own")) is Verdict.SAME
    third = replica_of("az://lake@acct/data/k", "t1")
    assert member_verdict(SOURCE, None, third) is Verdict.SAME


def test_a_member_spreads_its_own_writes_and_the_replicas_its_chain_forwards() -> None:
    """Groups A <-> B and B <-> C: B's route in the second group forwards A's writes to C,
    never C's own (they came from its own group)."""
    a, b, c = "s3://a/data/", "gs://b/data/", "gs://c/data/"
    tag = GroupTag(name="bc", members=(b, c), index=0, chain=(a, b, c), dataset="ab")
    assert spreads(tag, obj(b + "k", "own"))
    assert spreads(tag, replica_of(a + "k", "v1"))
    assert not spreads(tag, replica_of(c + "k", "v1"))
