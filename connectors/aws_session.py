"""aiobotocore sessions for one AWS location (``connectors.credentials.AwsAccess``): a named
profile, static keys, or a role assumed with the standard chain's (or the profile's)
credentials and renewed before it expires. Shared by the S3 store and the SQS queue; every
AWS call of a daemon can thus come from a different account per location."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import aiobotocore
from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioDeferredRefreshableCredentials,
)
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider
from botocore.utils import parse_timestamp

from connectors.credentials import AwsAccess

DEFAULT_REGION = "us-east-1"
#: One fixed User-Agent for every AWS client: botocore otherwise rebuilds and sanitises its
#: default one, component by component, on every request (a tenth of the client's CPU for a
#: small object's GET or PUT); and server access logs name the product.
USER_AGENT = f"replicator aiobotocore/{aiobotocore.__version__}"


class _Given(CredentialProvider):  # type: ignore[misc]
    """A credential provider that hands out credentials built elsewhere."""

    METHOD = "assume-role"
    CANONICAL_NAME = "replicator-assume-role"

    def __init__(self, credentials: Any) -> None:
        super().__init__()
        self._credentials = credentials

    async def load(self) -> Any:
        return self._credentials


def fast_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, without dateutil's general one for the two forms AWS
    answers with: an HTTP date (``Last-Modified``) and ISO 8601 in UTC (a listing's
    ``LastModified``). dateutil's parser was the largest part of the cost of parsing a small
    object's GET and of a listing page; any other form still goes to botocore's."""
    if isinstance(value, str):
        try:
            if value.endswith(" GMT"):
                return email.utils.parsedate_to_datetime(value).astimezone(UTC)
            if value.endswith("Z"):
                return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            pass
    parsed: datetime = parse_timestamp(value)
    return parsed


def _parsing(session: AioSession) -> AioSession:
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=fast_timestamp
    )
    return session


def aws_session(access: AwsAccess | None) -> AioSession:
    """A session whose credentials are ``access``'s (the standard chain where it says
    nothing). Does no I/O: a role is assumed on the first request and renewed as needed."""
    if access is None:
        return _parsing(AioSession())
    source = _parsing(AioSession(profile=access.profile) if access.profile else AioSession())
    if access.access_key_id:
        source.set_credentials(access.access_key_id, access.secret_access_key or "")
    if not access.role_arn:
        return source
    extra: dict[str, str] = {"RoleSessionName": access.role_session_name}
    if access.external_id:
        extra["ExternalId"] = access.external_id

    async def assume() -> Any:
        fetcher = AioAssumeRoleCredentialFetcher(
            client_creator=source.create_client,
            source_credentials=await source.get_credentials(),
            role_arn=access.role_arn,
            extra_args=extra,
        )
        return await fetcher.fetch_credentials()

    credentials = AioDeferredRefreshableCredentials(refresh_using=assume, method="assume-role")
    target = _parsing(AioSession(profile=access.profile) if access.profile else AioSession())
    target.get_component("credential_provider").insert_before("env", _Given(credentials))
    return target


def region_of(session: AioSession, access: AwsAccess | None) -> str:
    configured = access.region if access else None
    return configured or session.get_config_variable("region") or DEFAULT_REGION
