"""Read objects back with clients that share no code with the connectors under test."""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
from azure.storage.blob import BlobServiceClient

from connectors import parse_store_url


def read_object(url: str) -> bytes:
    """The bytes of the object at ``url``, fetched by each ecosystem's plain client."""
    parsed = parse_store_url(url)
    if parsed.scheme == "file":
        return Path(parsed.path).read_bytes()
    if parsed.scheme == "s3":
        client = boto3.client(
            "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
        )
        body: bytes = client.get_object(Bucket=parsed.container, Key=parsed.path)["Body"].read()
        return body
    if parsed.scheme == "gs":
        host = os.environ["STORAGE_EMULATOR_HOST"]
        name = urllib.parse.quote(parsed.path, safe="")
        with urllib.request.urlopen(
            f"{host}/storage/v1/b/{parsed.container}/o/{name}?alt=media", timeout=30
        ) as response:
            data: bytes = response.read()
            return data
    if parsed.scheme == "az":
        service = BlobServiceClient.from_connection_string(
            os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        )
        blob = service.get_blob_client(parsed.container, parsed.path)
        return blob.download_blob().readall()
    raise ValueError(f"no independent reader for {url}")


def delete_container(url: str) -> None:
    """Delete an empty bucket or container with each ecosystem's plain client (an operator's
    mistake, or a bucket torn down under a running route)."""
    parsed = parse_store_url(url)
    if parsed.scheme == "s3":
        client = boto3.client(
            "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
        )
        client.delete_bucket(Bucket=parsed.container)
    elif parsed.scheme == "gs":
        host = os.environ["STORAGE_EMULATOR_HOST"]
        request = urllib.request.Request(f"{host}/storage/v1/b/{parsed.container}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()
    elif parsed.scheme == "az":
        service = BlobServiceClient.from_connection_string(
            os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        )
        service.delete_container(parsed.container)
    else:
        raise ValueError(f"no independent client for {url}")
