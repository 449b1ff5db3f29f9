"""A directory tree as an object store: on-prem disks, NFS and other mounted file systems.

Keys map to paths below the root directory. A key is refused (InvalidKey) when it cannot be a
path: empty, ``.`` or ``..`` segments, empty segments (``a//b``), a trailing ``/``, NUL, a
segment over 255 bytes. Every path is resolved one directory at a time relative to an open
directory descriptor with O_NOFOLLOW, so neither ``..`` nor a symbolic link planted inside the
root can lead a read or a write outside it: a link met on the way is refused.

Writes go to a temporary file in the target directory, are fsynced and then renamed into
place, so readers never see a partial object. Attributes, user metadata and the CRC32C of the
content are kept in the file's ``user.replicator`` extended attribute. The etag is derived from
(mtime_ns, size, inode), which changes on every replacement since each write is a new file.
"""

from connectors.local.store import LocalStore

__all__ = ["LocalStore"]
