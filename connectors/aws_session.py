"""aiobotocore sessions for one AWS location (``connectors.credentials.AwsAccess``): a named
profile, static keys, or a role assumed with the standard chain's (or the profile's)
credentials and renewed before it expires. Shared by the S3 store and the SQS queue; every
AWS call of a daemon can thus come from a different account per location."""

from __future__ import annotations

import email.utils
import gzip
import json
import os
from datetime import UTC, datetime
from typing import Any

import aiobotocore
from aiobotocore.credentials import (
    AioAssumeRoleCredentialFetcher,
    AioDeferredRefreshableCredentials,
)
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider
from botocore.loaders import Loader
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


class DictJSONFileLoader:
    """botocore's model file loader (``botocore.loaders.JSONFileLoader``: ``name.json``, else
    ``name.json.gz``) parsing into plain dicts, which keep the files' order too. botocore's
    OrderedDicts double the cost of parsing the models an S3 client loads (the 1.2 MB
    endpoints file, the S3 model and its endpoint rules): ~40 ms of CPU per client."""

    _OPENERS = ((".json", open), (".json.gz", gzip.open))

    def exists(self, file_path: str) -> bool:
        return any(os.path.isfile(file_path + suffix) for suffix, _ in self._OPENERS)

    def load_file(self, file_path: str) -> Any:
        for suffix, opener in self._OPENERS:
            if os.path.isfile(file_path + suffix):
                with opener(file_path + suffix, "rb") as file:
                    return json.loads(file.read().decode("utf-8"))
        return None


def _models_loader(session: AioSession) -> Loader:
    """The session's model loader, searching AWS_DATA_PATH (``data_path``) first as
    botocore's own does."""
    data_path = session.get_config_variable("data_path")
    extra = None
    if data_path:
        extra = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)]
    return Loader(extra_search_paths=extra, file_loader=DictJSONFileLoader())


def _parsing(session: AioSession) -> AioSession:
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=fast_timestamp
    )
    session.register_component("data_loader", _models_loader(session))
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
