"""The ``[[credentials]]`` section as the data the connectors receive
(``connectors.credentials.StoreCredentials``), with secrets read from the environment
variables the section names; and the default Azure account events are published for.

Routes and their stores name Azure accounts in their URLs (``az://container@account/``);
``az://container/`` is the environment's default account (``AZURE_STORAGE_CONNECTION_STRING``
or ``AZURE_STORAGE_ACCOUNT``). Event Grid names the account of every event, so events of the
default account are published as ``az://container/key`` and those of any other account as
``az://container@account/key``; a route must therefore write the default account without
``@account``, which ``check_azure_accounts`` enforces at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors import parse_store_url
from connectors.azure_credentials import AzureCredentials, AzureCredentialsError
from connectors.credentials import AwsAccess, GCSAccess, StoreCredentials
from replicator.daemon.config import CredentialsSection, DaemonConfig
from replicator.errors import ConfigError


def _secret(env: Mapping[str, str], name: str | None, entry: str) -> str | None:
    if name is None:
        return None
    value = env.get(name)
    if not value:
        raise ConfigError(f"credentials for {entry}: environment variable {name} is not set")
    return value


def store_credentials(
    sections: tuple[CredentialsSection, ...], env: Mapping[str, str]
) -> StoreCredentials:
    s3: list[tuple[str, AwsAccess]] = []
    gcs: list[tuple[str, GCSAccess]] = []
    azure: dict[str, AzureCredentials] = {}
    for section in sections:
        if section.s3:
            entry = section.s3
            access = AwsAccess(
                profile=section.profile,
                role_arn=section.role_arn,
                external_id=_secret(env, section.external_id_env, entry),
                endpoint_url=section.endpoint_url,
                region=section.region,
                access_key_id=_secret(env, section.access_key_id_env, entry),
                secret_access_key=_secret(env, section.secret_access_key_env, entry),
            )
            s3.append((section.s3, access))
        elif section.gs:
            gcs.append((section.gs, GCSAccess(section.service_account_file)))
        elif section.azure_account and section.method:
            account = section.azure_account
            origin = f"[[credentials]] azure_account = {account!r}, method = {section.method!r}"
            endpoints = {
                service: url.rstrip("/")
                for service, url in (
                    ("blob", section.blob_endpoint),
                    ("queue", section.queue_endpoint),
                )
                if url
            }
            if section.method == "connection_string":
                text = _secret(env, section.connection_string_env, account) or ""
                try:
                    found = AzureCredentials.from_connection_string(text, origin=origin)
                except AzureCredentialsError as exc:
                    raise ConfigError(f"credentials for Azure account {account}: {exc}") from None
                if found.account != account:
                    raise ConfigError(
                        f"credentials for Azure account {account}: the connection string is "
                        f"for account {found.account!r}"
                    )
                azure[account] = found
            else:
                azure[account] = AzureCredentials(
                    account,
                    section.method,
                    key=_secret(env, section.key_env, account),
                    sas=_secret(env, section.sas_env, account),
                    client_id=section.client_id,
                    endpoints=endpoints,
                    origin=origin,
                )
    return StoreCredentials(tuple(s3), tuple(gcs), azure)


def default_azure_account(env: Mapping[str, str]) -> str | None:
    """The account ``az://container/...`` means, if the environment names one."""
    try:
        return AzureCredentials.from_environment(env).account
    except AzureCredentialsError:
        return None


def check_azure_accounts(config: DaemonConfig, default_account: str | None) -> None:
    """Refuse routes that write the default account as ``@account``: its events are
    published without it, so such a route would never see one."""
    if default_account is None:
        return
    for route in config.routes:
        for url in (route.source, *(d.url for d in route.destinations)):
            parsed = parse_store_url(url)
            if parsed.scheme == "az" and parsed.container.endswith(f"@{default_account}"):
                container = parsed.container.partition("@")[0]
                raise ConfigError(
                    f"route {route.name!r}: {url} names the default Azure account "
                    f"{default_account!r}; write az://{container}/{parsed.path} instead"
                )
