"""AWS S3 and S3-compatible endpoints, through aiobotocore.

Endpoint, region and credentials come from the standard AWS chain (environment, shared config
and credentials files, instance roles): botocore itself honours ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_S3``, and when either (or an ``endpoint_url`` in the config file) is set the
client uses path-style addressing, which every S3-compatible server understands. Without a
configured region, us-east-1 is used.

Checksums: botocore is told to add checksums only where the API requires them and to validate
responses only when asked, so that it neither computes a CRC32 trailer nobody asked for nor
skips ours. Every put and every part carries a CRC32C computed here from the bytes, so S3
rejects damaged bytes. Multipart uploads use S3's default COMPOSITE CRC32C (a checksum of the
part checksums, shown as ``value-N``), which is not a checksum of the object's bytes and is
never reported in ``ObjectMeta.checksums``; part CRC32Cs are in the part tokens instead.

Bodies: a bytes body goes to botocore as it is, any other buffer as a file over its memory
(``connectors.payload.BufferReader``: botocore's signer copies a ``bytearray``); a
``before-send`` hook then hands aiohttp the same memory in slices (``BufferPayload``). Streamed
reads yield the aiohttp body's chunks as received. Every write sends the CRC32C its caller
computed while reading, when given (``checksums``), so the bytes are hashed once.

Conditional requests map onto S3's own: create-only is ``If-None-Match: *``, ``if_match`` is
``If-Match`` on put, get and delete, ``CopySourceIfMatch`` on copies. Versions are S3 version
ids; an unversioned bucket's ``null`` version is reported as None.

Server-side copy uses CopyObject, which S3 limits to sources of 5 GiB: larger sources raise
NotSupported, and the planner copies them through multipart parts instead (it already plans
server-side copies only up to ``max_single_put``).

Small objects: a whole-object GetObject, PutObject and HeadObject go straight over aiohttp,
signed with botocore's SigV4 signer (``connectors.s3_direct``): the SDK's per-request machinery
cost more client CPU than the rest of a small object's copy. Answers and errors are read into
what the SDK would have returned, so both paths give the same ``ObjectMeta`` and errors.
Setting ``REPLICATOR_S3_DIRECT_REQUESTS=0`` sends them through the SDK as well; everything
else (multipart, listings, copies, deletes, ranges) always goes through the SDK.

Keys: S3 takes any UTF-8 key up to 1024 bytes and this connector passes keys through untouched
(listings ask for URL-encoded keys, since XML 1.0 cannot carry some characters, and decode
them exactly). Multipart uploads are refused for keys with characters XML 1.0 cannot carry,
because S3 echoes the key in the XML bodies of CreateMultipartUpload and
CompleteMultipartUpload, which then cannot be parsed.
"""

from connectors.s3.store import S3Store

__all__ = ["S3Store"]
