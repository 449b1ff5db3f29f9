"""Where a file store keeps what is not an object: the extended attribute of its files,
the marker of temporary files, the staging area of uploads and single writes."""

from __future__ import annotations

from connectors.base import STAGING_PREFIX

XATTR = "user.replicator"
TEMP_MARKER = ".replicator-tmp-"
UPLOADS_DIR = STAGING_PREFIX.rstrip("/")
# Where single writes are staged before their rename into place, so that the temporary file of
# a write killed half-way is found by ``list_multipart_uploads`` (and the upload janitor) with
# no walk of the whole tree. Not alphanumeric: never taken for an upload's directory.
TEMP_DIR = "single-writes"
# An upload id naming a staged single write: letters that no hex upload id holds.
TEMP_UPLOAD_PREFIX = "tmp"
NAME_MAX = 255
