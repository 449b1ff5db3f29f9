"""Store connectors and the URL registry.

Store URLs are plain strings, never percent-decoded, so that any key can be named:

    s3://bucket[/prefix]        AWS S3 or an S3-compatible endpoint (AWS_ENDPOINT_URL)
    gs://bucket[/prefix]        Google Cloud Storage (STORAGE_EMULATOR_HOST honoured)
    az://container[/prefix]     Azure Blob Storage (AZURE_STORAGE_CONNECTION_STRING, or
                                AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY)
    file:///absolute/directory  a local or mounted file system (on-prem, NFS, ...)
    mem://name[/prefix]         an in-process store, for tests and demos

A cloud store's prefix is a raw key prefix (``s3://b/logs`` holds ``logs2024`` too); a file
store's root is a directory.
"""

from __future__ import annotations

import importlib

from connectors.base import InvalidStoreURL, ObjectStore, StoreURL

# scheme -> "module:class"; imported on first use so that one SDK's import cost or absence
# does not affect the others.
_REGISTRY: dict[str, str] = {
    "s3": "connectors.s3:S3Store",
    "gs": "connectors.gcs:GCSStore",
    "az": "connectors.azure:AzureStore",
    "file": "connectors.local:LocalStore",
    "mem": "connectors.memory:MemoryStore",
}

SCHEMES = tuple(_REGISTRY)


def parse_store_url(url: str) -> StoreURL:
    """Split a store URL without decoding or normalising anything."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidStoreURL(
            f"{url!r} is not a store URL: expected scheme://..., one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme not in _REGISTRY:
        raise InvalidStoreURL(
            f"unknown store scheme {scheme + '://'!r} in {url!r}: expected one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme == "file":
        if not rest.startswith("/"):
            raise InvalidStoreURL(
                f"{url!r}: file URLs need an absolute path with an empty host, "
                "e.g. file:///data/lake"
            )
        return StoreURL("file", "", rest)
    container, _, path = rest.partition("/")
    if not container:
        raise InvalidStoreURL(f"{url!r} names no bucket or container")
    return StoreURL(scheme, container, path)


def _store_class(scheme: str) -> type[ObjectStore]:
    module_name, _, class_name = _REGISTRY[scheme].partition(":")
    cls: type[ObjectStore] = getattr(importlib.import_module(module_name), class_name)
    return cls


def store_type(url: str) -> type[ObjectStore]:
    """The class of the store ``url`` names, its module (and SDK) imported."""
    return _store_class(parse_store_url(url).scheme)


def open_store(url: str) -> ObjectStore:
    """Open the store rooted at ``url``; keys given to it are relative to that root.

    Opening does no I/O: a missing bucket or an unreachable endpoint surfaces on first use as
    NotFound or TransientError.
    """
    parsed = parse_store_url(url)
    return _store_class(parsed.scheme).from_url(parsed)


def split_object_url(url: str) -> tuple[str, str]:
    """Split the URL of one object into (store root URL, key).

    Cloud stores are rooted at the bucket or container so the key keeps every ``/``; a file
    store is rooted at the object's directory.
    """
    parsed = parse_store_url(url)
    if parsed.scheme == "file":
        directory, _, name = parsed.path.rpartition("/")
        if not name:
            raise InvalidStoreURL(f"{url!r} names a directory, not a file")
        return f"file://{directory or '/'}", name
    if not parsed.path:
        raise InvalidStoreURL(f"{url!r} names a bucket or container, not an object")
    return parsed.root, parsed.path


def open_object(url: str) -> tuple[ObjectStore, str]:
    """Open the store holding the object at ``url`` and return it with the object's key."""
    root, key = split_object_url(url)
    return open_store(root), key


__all__ = [
    "SCHEMES",
    "StoreURL",
    "open_object",
    "open_store",
    "parse_store_url",
    "split_object_url",
]
