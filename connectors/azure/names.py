"""The names and attributes Azure can hold byte-exact: blob-name rules, attribute values
carried as HTTP headers, user-metadata names that must be C# identifiers."""

from __future__ import annotations

import re

from connectors.base import STAGING_PREFIX, InvalidArgument, InvalidStoreURL, ObjectAttributes

UPLOADS_PREFIX = STAGING_PREFIX

_CONTAINER_NAME = re.compile(r"^(?:\$root|\$web|\$logs|[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9])$")
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")
_METADATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
_XML_UNSAFE = re.compile("[\x00-\x1f\x7f\ufffe\uffff]")
_MAX_SEGMENTS = 254
NAME_RULE = " (Azure Blob names: at most 1,024 characters, enforced here as UTF-8 bytes)"


def name_problem(name: str) -> str | None:
    """Why Azure cannot hold the blob name ``name`` byte-exact, or None."""
    if name.startswith(UPLOADS_PREFIX):
        return f"blob names under {UPLOADS_PREFIX!r} are reserved for in-progress multipart uploads"
    if "\\" in name:
        return "Azure Blob names cannot contain '\\': the service turns it into '/'"
    bad = _XML_UNSAFE.search(name)
    if bad:
        return (
            f"Azure Blob names cannot contain control characters or U+FFFE/U+FFFF "
            f"(found U+{ord(bad.group()):04X}): listings are XML and cannot carry them"
        )
    segments = name.split("/")
    if len(segments) > _MAX_SEGMENTS:
        return f"Azure Blob names have at most {_MAX_SEGMENTS} path segments, not {len(segments)}"
    if any(segment.endswith(".") for segment in segments):
        return (
            "Azure Blob names must not have a path segment ending in '.' (URL normalisation "
            "removes '.' and '..' segments and trailing dots)"
        )
    return None


def _check_header_value(what: str, value: str, url: str) -> None:
    if not _HEADER_VALUE.match(value) or value != value.strip(" \t"):
        raise InvalidArgument(
            f"{what} must be printable US-ASCII without leading or trailing blanks "
            "(Azure carries it as an HTTP header)",
            url=url,
        )


def check_attributes(attributes: ObjectAttributes, url: str) -> None:
    for what, value in (
        ("Content-Type", attributes.content_type),
        ("Cache-Control", attributes.cache_control),
        ("Content-Encoding", attributes.content_encoding),
        ("Content-Disposition", attributes.content_disposition),
    ):
        if value is not None:
            _check_header_value(what, value, url)
    seen: dict[str, str] = {}
    for name, value in attributes.user_metadata.items():
        if not _METADATA_NAME.match(name):
            raise InvalidArgument(
                f"user-metadata name {name!r} is not allowed: Azure metadata names must be "
                "C# identifiers (a letter or '_', then letters, digits or '_')",
                url=url,
            )
        folded = name.lower()
        if folded in seen:
            raise InvalidArgument(
                f"user-metadata names {seen[folded]!r} and {name!r} are the same name on Azure "
                "(metadata names are case-insensitive)",
                url=url,
            )
        seen[folded] = name
        _check_header_value(f"user-metadata value of {name!r}", value, url)


def check_container_url(container: str, account: str) -> None:
    """Refuse a container or storage account name that Azure does not allow."""
    if not _CONTAINER_NAME.match(container):
        raise InvalidStoreURL(
            f"{container!r} is not an Azure container name: 3-63 lowercase letters, "
            "digits and single hyphens, starting and ending with a letter or digit"
        )
    if account and not _ACCOUNT_NAME.match(account):
        raise InvalidStoreURL(
            f"{account!r} is not an Azure storage account name: 3-24 lowercase letters and digits"
        )
