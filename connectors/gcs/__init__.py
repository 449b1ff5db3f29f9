"""Google Cloud Storage, through gcloud-aio-storage and the GCS JSON API.

Endpoint and credentials: gcloud-aio-storage resolves the API root, honouring
``STORAGE_EMULATOR_HOST`` (then no credentials are sent at all); otherwise requests carry a
token from gcloud-aio-auth's default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, the
gcloud application-default file, or the GCE metadata server). One aiohttp session with a pool
of 64 connections serves every request of a store, so parallel parts and ranged reads do not
queue behind each other.

The library serves listings, deletes and rewrites. Uploads, reads, metadata reads and
composes go to the JSON API directly through the same session and API root, because the
library cannot do them right: it lower-cases camelCase resource fields (``cacheControl``
would be lost, ``md5Hash`` dropped), guesses a content type from the object name, copies
the body twice to build a multipart request, cannot name a generation in downloads and
metadata reads, composes with no destination metadata or source preconditions, and its
downloads let aiohttp decode ``Content-Encoding: gzip`` objects, which would hand back bytes
the object does not hold. Reads here ask for ``Accept-Encoding: gzip`` and decode nothing,
so the stored bytes come back; a whole-object read is checked against the CRC32C GCS sends
in ``X-Goog-Hash``.

Versions and etags: ``ObjectMeta.version`` and ``ObjectMeta.etag`` are both the object's
generation. GCS preconditions are generation-based (``ifGenerationMatch``), and the JSON API's
own etag also changes on metadata-only updates, so it would fail a pinned read of unchanged
bytes. Checksums are the object's CRC32C and, where GCS has one (not for composed objects),
its MD5; both cover the whole object.

Writes are multipart uploads (resource and media in one request) carrying the CRC32C of the
bytes, so GCS rejects damaged bytes (400, surfaced as IntegrityError). Create-only is
``ifGenerationMatch=0`` and ``if_match`` is ``ifGenerationMatch=<generation>``; both are
checked by fake-gcs-server too, which honours preconditions on multipart uploads only. A
conditional delete also sends ``ifGenerationMatch`` but compares the generation first, since
the emulator ignores it there; a conditional server-side copy rewrites the pinned
``sourceGeneration`` for the same reason.

Pinned reads name the generation itself (``generation=G``) as well as ``ifGenerationMatch``:
fake-gcs-server ignores preconditions on downloads, and a generation read can never return
other bytes. A generation that is gone is PreconditionFailed for ``if_match`` and NotFound
for ``version``. On a versioned bucket an ``if_match`` read may still return the pinned
(noncurrent) bytes, which is consistent, never a mix of versions.

Ordered uploads (``create_ordered_upload``, ``connectors.gcs.sessions``) are one resumable
upload session taking the parts in order: the object is an ordinary one, with its MD5. The
engine uses them for objects up to a size where one stream is as fast as parallel parts.

Multipart uploads are parallel temporary objects composed at the end. Everything lives under
the reserved prefix ``.replicator-uploads/`` at the bucket root, which ``list()`` hides and
keys may not use: the manifest ``.replicator-uploads/<id>`` (the destination key and
attributes, written by ``create_multipart``; ``list_multipart_uploads`` lists these) and the
parts and intermediate composites under ``.replicator-uploads/<id>/``. A part token is the
part object's name and generation. ``complete_multipart`` checks every token against the
staged objects, then composes in part-number order through a tree of 32-source composes
(GCS's limit per request) and writes the destination with its attributes. Afterwards it
deletes the staged objects, the manifest last, so leftovers of an interrupted clean-up stay
listed for the orphan cleaner. When completion fails for good it clears the staging the same
way; when it fails transiently it keeps the parts and the manifest so the engine's retry of
``complete_multipart`` can succeed (abort removes them otherwise). A bucket lifecycle rule
deleting old objects under ``.replicator-uploads/`` is a good idea on real GCS: a part
uploaded after its upload was aborted has no manifest to be found by.

Limits: compose has no minimum source size, so parts may be as small as one byte (the engine
chooses bigger ones). 10,000 parts need three compose levels (32 x 32 x 10 = 10,240
sources), which bounds the work of ``complete``. A single put is one request with the bytes
in memory, so it is held to 5 GiB though GCS takes objects of up to 5 TiB.

Keys follow the GCS object naming rules: 1-1024 bytes of UTF-8, no carriage return or line
feed, not ``.`` or ``..``, not under ``.well-known/acme-challenge/``; plus this connector's
reserved staging prefix. Names are percent-encoded whole (``/`` included) in request paths, so
every other key, however hostile, is stored byte-exact.
"""

from connectors.gcs.store import GCSStore
from connectors.gcs.transport import STAGING_PREFIX, map_status

__all__ = ["STAGING_PREFIX", "GCSStore", "map_status"]
