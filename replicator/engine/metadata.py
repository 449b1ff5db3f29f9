"""Carrying object attributes and user metadata across clouds (pure).

Rules the stores impose on user-metadata names, and what replicator does about them:

=========  ======================================  =========================================
store      names allowed                           mapping applied on the way in
=========  ======================================  =========================================
s3         HTTP header tokens, stored lower-case   lower-cased (S3 would do it anyway)
gs         any string                              none
az         C# identifiers: letter or ``_`` first,  every other character becomes ``_``;
           then letters, digits, ``_``;            a leading digit gets a ``_`` prefix
           case-insensitive
file, mem  any string                              none
=========  ======================================  =========================================

Values must be printable US-ASCII on S3 and Azure (they travel as HTTP headers); a non-ASCII
value is percent-encoded as UTF-8 (RFC 3986) and the name is recorded in
``replicator_encoded`` so readers can decode it. Two names that map to the same name, or a
name that cannot be mapped, are refused with MetadataError naming them: nothing is dropped.

Replica marking: every copy carries ``replicator_source`` (the source URL, always
percent-encoded), ``replicator_source_version`` and, where known when the object is written,
``replicator_fingerprint``, and ``replicator_source_modified`` (the source's last-modified
time, ISO 8601: a replication group's conflict rule compares the times of the writes a
replica carries). An object with ``replicator_source`` is a replica and is never
replicated back, except by another replication group of a chain, which forwards it: the
forwarded copy keeps the original write's ``replicator_source_modified`` and names the
object the user wrote in ``replicator_origin`` and its version in
``replicator_origin_version`` (a direct copy's origin is its source).

Marks alone never make an object a replica of a version (``replica_mismatch``): its size must
be the source's, every whole-object checksum both stores report must agree, and the object
must show it was written and checked by a copy: the fingerprint mark (written with the bytes,
or at completion once every part was checked), or a whole-object checksum the store itself
validated (an S3 multipart replica, whose metadata is fixed before its bytes are known, has
its full-object CRC32C).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

from connectors.base import ObjectAttributes, ObjectMeta
from replicator.errors import ReplicatorError

SOURCE_KEY = "replicator_source"
SOURCE_VERSION_KEY = "replicator_source_version"
FINGERPRINT_KEY = "replicator_fingerprint"
ENCODED_KEY = "replicator_encoded"
SOURCE_MODIFIED_KEY = "replicator_source_modified"
ORIGIN_KEY = "replicator_origin"
ORIGIN_VERSION_KEY = "replicator_origin_version"
RESERVED = frozenset(
    {
        SOURCE_KEY,
        SOURCE_VERSION_KEY,
        FINGERPRINT_KEY,
        ENCODED_KEY,
        SOURCE_MODIFIED_KEY,
        ORIGIN_KEY,
        ORIGIN_VERSION_KEY,
    }
)
HEADER_VALUE_STORES = frozenset({"s3", "az"})
_AZURE_INVALID = re.compile(r"[^A-Za-z0-9_]")
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")


class MetadataError(ReplicatorError):
    """User metadata that cannot be carried to the destination store as it is."""


def _map_name(name: str, dest_scheme: str) -> str:
    if dest_scheme == "s3":
        return name.lower()
    if dest_scheme == "az":
        mapped = _AZURE_INVALID.sub("_", name)
        return f"_{mapped}" if mapped[:1].isdigit() else mapped
    return name


def _encode_value(value: str) -> str:
    return urllib.parse.quote(value, safe="/:@!$&'()*+,;=-._~")


def map_user_metadata(metadata: Mapping[str, str], dest_scheme: str) -> dict[str, str]:
    """User metadata as the destination can hold it, by the table in the module docstring."""
    mapped: dict[str, str] = {}
    origins: dict[str, str] = {}
    encoded: list[str] = []
    for name, value in metadata.items():
        if name in RESERVED:
            continue
        if not name:
            raise MetadataError("an empty user-metadata name cannot be stored")
        target = _map_name(name, dest_scheme)
        folded = target.lower() if dest_scheme in HEADER_VALUE_STORES else target
        if folded in origins:
            raise MetadataError(
                f"user-metadata names {origins[folded]!r} and {name!r} both become "
                f"{target!r} on {dest_scheme}://; rename one at the source"
            )
        origins[folded] = name
        if dest_scheme in HEADER_VALUE_STORES and not _PRINTABLE_ASCII.match(value):
            value = _encode_value(value)
            encoded.append(target)
        mapped[target] = value
    if encoded:
        mapped[ENCODED_KEY] = ",".join(sorted(encoded))
    return mapped


def replica_attributes(
    attributes: ObjectAttributes,
    dest_scheme: str,
    *,
    source_url: str,
    source_version: str,
    fingerprint: str | None = None,
    source_modified: datetime | None = None,
) -> ObjectAttributes:
    """The source's attributes mapped for the destination, plus the replica marks; a source
    that is itself a replica (forwarded along a chain of groups) passes on its origin and
    the original write's time."""
    user = map_user_metadata(attributes.user_metadata, dest_scheme)
    user[SOURCE_KEY] = _encode_value(source_url)
    user[SOURCE_VERSION_KEY] = source_version
    forwarded = replica_origin(attributes.user_metadata)
    if forwarded is not None:
        origin, origin_version = forwarded
        user[ORIGIN_KEY] = _encode_value(origin)
        if origin_version is not None:
            user[ORIGIN_VERSION_KEY] = origin_version
        source_modified = replica_source_modified(attributes.user_metadata) or source_modified
    if source_modified is not None:
        user[SOURCE_MODIFIED_KEY] = source_modified.astimezone(UTC).isoformat()
    if fingerprint is not None:
        user[FINGERPRINT_KEY] = fingerprint
    return replace(attributes, user_metadata=user)


def replica_source(user_metadata: Mapping[str, str]) -> str | None:
    """The source URL if these are a replica's metadata, else None."""
    value = _lookup(user_metadata, SOURCE_KEY)
    return None if value is None else urllib.parse.unquote(value)


def replica_origin(user_metadata: Mapping[str, str]) -> tuple[str, str | None] | None:
    """The object a user wrote that a replica holds (through however many groups of a chain
    forwarded it) and its version; None if these are not a replica's metadata."""
    origin = _lookup(user_metadata, ORIGIN_KEY)
    if origin is not None:
        return urllib.parse.unquote(origin), _lookup(user_metadata, ORIGIN_VERSION_KEY)
    source = replica_source(user_metadata)
    if source is None:
        return None
    return source, replica_source_version(user_metadata)


def replica_source_version(user_metadata: Mapping[str, str]) -> str | None:
    return _lookup(user_metadata, SOURCE_VERSION_KEY)


def replica_source_modified(user_metadata: Mapping[str, str]) -> datetime | None:
    """The last-modified time of the source a replica was written from, if marked."""
    value = _lookup(user_metadata, SOURCE_MODIFIED_KEY)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def replica_fingerprint(user_metadata: Mapping[str, str]) -> str | None:
    return _lookup(user_metadata, FINGERPRINT_KEY)


def _lookup(user_metadata: Mapping[str, str], name: str) -> str | None:
    # Azure and S3 treat names case-insensitively and may return them in another case.
    for key, value in user_metadata.items():
        if key.lower() == name:
            return value
    return None


def replica_mismatch(source: ObjectMeta, source_version: str, existing: ObjectMeta) -> str | None:
    """Why ``existing`` is not a verified replica of ``source`` at ``source_version`` (None
    when it is). ``existing`` must carry its attributes (a HEAD, not an S3 listing)."""
    user = existing.attributes.user_metadata
    if replica_source(user) != source.url or replica_source_version(user) != source_version:
        return "the destination is not a replica of this source version"
    if existing.size != source.size:
        return f"the replica holds {existing.size} bytes, the source {source.size}"
    for kind in sorted(set(source.checksums) & set(existing.checksums)):
        if source.checksums[kind] != existing.checksums[kind]:
            return f"the replica's {kind} differs from the source's"
    if replica_fingerprint(user) is None and not existing.checksums:
        return "nothing shows the replica's bytes were checked (no fingerprint, no checksum)"
    return None
