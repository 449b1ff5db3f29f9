"""The aiobotocore client of an S3Store: the configured endpoint, the client's configuration,
the hooks its requests go out through, and the direct path for small-object requests."""

from __future__ import annotations

from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.configprovider import ConfiguredEndpointProvider

from connectors.aws_requests import S3RequestReporter
from connectors.aws_session import USER_AGENT
from connectors.credentials import AwsAccess
from connectors.payload import sliced
from connectors.s3_direct import S3DirectRequests, virtual_host_endpoint

# Parallel part uploads and ranged reads each hold a connection.
POOL_CONNECTIONS = 64
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60


def configured_endpoint(session: AioSession, access: AwsAccess | None) -> str | None:
    """The endpoint the credentials or the AWS configuration name, else None (AWS's own)."""
    endpoint = access.endpoint_url if access else None
    if not endpoint and not session.get_config_variable("ignore_configured_endpoint_urls"):
        endpoint = ConfiguredEndpointProvider(
            full_config=session.full_config,
            scoped_config=session.get_scoped_config(),
            client_name="s3",
        ).provide()
    return endpoint


def client_config(region: str, *, path_style: bool) -> AioConfig:
    return AioConfig(
        region_name=region,
        s3={
            "addressing_style": "path" if path_style else "auto",
            # The body is covered by the CRC32C header, which is signed; a SHA-256 of
            # every payload would cost a second pass over the bytes for nothing more.
            "payload_signing_enabled": False,
        },
        # The connector attaches CRC32C itself; botocore's default would add a CRC32
        # trailer to every upload on top of it.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # The engine owns the one retry policy; one SDK retry absorbs a dropped pooled
        # connection without multiplying the engine's attempts.
        retries={"total_max_attempts": 2, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=POOL_CONNECTIONS,
        user_agent=USER_AGENT,
    )


def send_sliced(request: Any, **_: Any) -> None:
    """botocore's ``before-send`` hook: a large body goes out in slices of its buffer (see
    connectors.payload), after botocore has sized and signed it. botocore asks a file body
    to wait for ``100 Continue``, a round trip per request that a signed, sized body of
    bytes already in memory does not need."""
    body = sliced(request.body)
    if body is not request.body:
        request.body = body
        request.headers.pop("Expect", None)


def register_send_hooks(client: Any, location: str) -> None:
    """Bodies go out in slices, and every request is reported (connectors.aws_requests)."""
    client.meta.events.register("before-send.s3", send_sliced)
    reporter = S3RequestReporter(location)
    client.meta.events.register("before-send.s3", reporter.before_send)
    client.meta.events.register("response-received.s3.GetObject", reporter.response_received)


async def open_direct(
    session: AioSession, client: Any, bucket: str, location: str, *, path_style: bool
) -> S3DirectRequests | None:
    """The direct path for small-object requests, or None where addressing is not plain
    (see connectors.s3_direct) or there are no credentials to sign with (the SDK then
    raises what it raises without them)."""
    credentials = await session.get_credentials()
    if credentials is None:
        return None
    endpoint = str(client.meta.endpoint_url)
    if path_style:
        bucket_url: str | None = f"{endpoint.rstrip('/')}/{bucket}"
    else:
        s3_options = (session.get_scoped_config() or {}).get("s3") or {}
        special = (
            session.get_config_variable("use_fips_endpoint")
            or session.get_config_variable("use_dualstack_endpoint")
            or str(s3_options.get("use_accelerate_endpoint", "")).lower() == "true"
            or str(s3_options.get("use_dualstack_endpoint", "")).lower() == "true"
        )
        bucket_url = None if special else virtual_host_endpoint(endpoint, bucket)
    if bucket_url is None:
        return None
    return S3DirectRequests(
        bucket_url=bucket_url,
        region=str(client.meta.region_name),
        credentials=credentials,
        client_config=client.meta.config,
        location=location,
        pool_connections=POOL_CONNECTIONS,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
    )
