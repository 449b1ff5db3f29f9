"""The baseline the benchmark holds replicator against: each SDK's plainest GET and PUT.

``python -m replicator.bench.raw SOURCE_URL DEST_URL [--concurrency N]`` copies every object
under the source prefix to the destination prefix, each object read whole with one GET and
written whole with one PUT: no checksums, no verification, no multipart, no retries of its
own. It is the floor of what a client can spend on the test bed, not a way to copy data.

Also here, because it needs the Azure SDK: the account SAS rclone needs to reach Azurite.
This module is the benchmark's one exception to "cloud SDKs are imported only by their
connector" (see the import contracts in pyproject.toml).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.session import get_session
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
from azure.storage.blob.aio import BlobServiceClient

from connectors import parse_store_url


def account_sas(account: str, key: str, hours: float = 6) -> str:
    """An account SAS with every permission a copy tool needs, for ``hours``."""
    return generate_account_sas(
        account,
        key,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, list=True, create=True, add=True, delete=True),
        datetime.now(UTC) + timedelta(hours=hours),
    )


class _Ends:
    """The raw clients, opened once."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession()
        self._s3_context = get_session().create_client(
            "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"), region_name="us-east-1"
        )
        self.s3: Any = None
        self.azure = BlobServiceClient.from_connection_string(
            os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        )

    async def __aenter__(self) -> _Ends:
        self.s3 = await self._s3_context.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._s3_context.__aexit__(None, None, None)
        await self.session.close()
        await self.azure.close()

    async def keys(self, scheme: str, container: str, prefix: str) -> list[str]:
        if scheme == "s3":
            found: list[str] = []
            paginator = self.s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=container, Prefix=prefix):
                found += [item["Key"] for item in page.get("Contents") or ()]
            return found
        if scheme == "gs":
            found, token = [], None
            while True:
                params = {"prefix": prefix, **({"pageToken": token} if token else {})}
                url = f"{os.environ['STORAGE_EMULATOR_HOST']}/storage/v1/b/{container}/o"
                async with self.session.get(url, params=params) as response:
                    page = await response.json()
                found += [item["name"] for item in page.get("items") or ()]
                token = page.get("nextPageToken")
                if not token:
                    return found
        if scheme == "az":
            client = self.azure.get_container_client(container)
            return [b.name async for b in client.list_blobs(name_starts_with=prefix or None)]
        root = Path(container)
        return sorted(str(p.relative_to(root)) for p in (root / prefix).rglob("*") if p.is_file())

    async def get(self, scheme: str, container: str, key: str) -> bytes:
        if scheme == "s3":
            response = await self.s3.get_object(Bucket=container, Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        if scheme == "gs":
            name = urllib.parse.quote(key, safe="")
            url = f"{os.environ['STORAGE_EMULATOR_HOST']}/storage/v1/b/{container}/o/{name}"
            async with self.session.get(url, params={"alt": "media"}) as response:
                response.raise_for_status()
                return await response.read()
        if scheme == "az":
            stream = await self.azure.get_blob_client(container, key).download_blob()
            return await stream.readall()
        return await asyncio.to_thread(Path(container, key).read_bytes)

    async def put(self, scheme: str, container: str, key: str, data: bytes) -> None:
        if scheme == "s3":
            await self.s3.put_object(Bucket=container, Key=key, Body=data)
        elif scheme == "gs":
            url = f"{os.environ['STORAGE_EMULATOR_HOST']}/upload/storage/v1/b/{container}/o"
            params = {"uploadType": "media", "name": key}
            async with self.session.post(url, params=params, data=data) as response:
                response.raise_for_status()
        elif scheme == "az":
            await self.azure.get_blob_client(container, key).upload_blob(data, overwrite=True)
        else:
            path = Path(container, key)
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(path.write_bytes, data)


def _split(url: str) -> tuple[str, str, str]:
    parsed = parse_store_url(url)
    if parsed.scheme == "file":
        return "file", parsed.path, ""
    return parsed.scheme, parsed.container, parsed.path


async def copy(source_url: str, dest_url: str, concurrency: int) -> dict[str, float]:
    (src_scheme, src_container, src_prefix) = _split(source_url)
    (dst_scheme, dst_container, dst_prefix) = _split(dest_url)
    async with _Ends() as ends:
        started = time.perf_counter()
        keys = await ends.keys(src_scheme, src_container, src_prefix)
        gate = asyncio.Semaphore(concurrency)
        copied = 0

        async def one(key: str) -> None:
            nonlocal copied
            async with gate:
                data = await ends.get(src_scheme, src_container, key)
                target = dst_prefix + key[len(src_prefix) :]
                await ends.put(dst_scheme, dst_container, target, data)
                copied += len(data)

        await asyncio.gather(*(one(key) for key in keys))
        return {"objects": len(keys), "bytes": copied, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("dest")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(copy(args.source, args.dest, args.concurrency))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
