"""Azure Blob Storage (``az://container/prefix`` in the default account,
``az://container@account/prefix`` in a named one) on azure-storage-blob's asyncio client.

Credentials (``connectors.azure_credentials``) are resolved when the store is opened: the
default account's from the environment (``AZURE_STORAGE_CONNECTION_STRING``, else
``AZURE_STORAGE_ACCOUNT`` with ``AZURE_STORAGE_KEY``, ``AZURE_STORAGE_SAS_TOKEN`` or Entra ID
through ``DefaultAzureCredential``); a named account's from the installed
``connectors.credentials`` (key, SAS, connection string or Entra ID, per account).

Integrity: every block and every single put carries a transactional ``x-ms-content-crc64``
(CRC-64/NVME, little-endian), so the service refuses damaged bytes (``Crc64Mismatch``); the
CRC64 the service echoes is compared with the one sent, and part tokens carry it. The caller
usually passes the CRC64 it computed while reading (``checksums``); otherwise it is computed
here (awscrt, ~8 GB/s per core, where MD5 manages ~0.5 GB/s: CRC64 is what keeps the client's
CPU per GiB low). ``head`` reports the blob's Content-MD5 as its full-object MD5 where the
service computed one (a single put); a blob assembled from blocks has none. Azurite computes
CRC64 in JavaScript, so on the emulator a block with an MD5 is accepted ~3x faster; on Azure
both are free to the service, and only the client's hashing differs.

Small objects: Get Blob of a whole blob, Put Blob and Get Blob Properties go straight over
the store's aiohttp session (``connectors.azure_direct``), authorised with the account key
(Shared Key, signed by the SDK's own policy) or the SAS token, without azure-core's pipeline,
whose per-request cost exceeded the rest of a small blob's copy. Entra ID credentials keep
the SDK for them, and ``REPLICATOR_AZURE_DIRECT_REQUESTS=0`` does too; every other request
always goes through it.

Bodies are sent in slices of the caller's buffer (``connectors.payload``), and ranged reads
stream (``read_stream``: one GET per range, through the SDK's generated client, because the
public downloader buffers whole ranges and joins them, memory outside the engine's budget).

Multipart uploads are staged blocks of the destination blob with deterministic block ids
(``<upload id>-<part:05d>``, the same width for every block, as Azure requires) committed in
part-number order. Azure has no upload object to list, so each upload also writes a marker
blob ``.replicator-uploads/<upload id>`` at the container root holding the destination key
(metadata) and attributes (body); it is deleted on complete and abort, and the reserved
prefix is hidden from listings and refused as a key. Uncommitted blocks of a blob that was
never committed are dropped on abort by deleting the blob (Azurite removes them; Azure
otherwise garbage-collects them after 7 days, and any later commit to the name discards them).

Listing: Azure has no start-after and its continuation markers are opaque, so ``start_after``
pages from the beginning of the prefix and skips keys up to it on the client: resuming costs a
listing of every key before the resume point. Keys are yielded in the service's order
(Azurite compares UTF-16 code units, so keys with characters above U+FFFF may sort before
U+E000..U+FFFF, unlike Python's code-point order).
"""

from connectors.azure.store import AzureStore

__all__ = ["AzureStore"]
