"""How to reach and authenticate one Azure storage account; shared by the Blob store and the
Storage Queue consumer (each still the only importer of its own service SDK).

One account, one method, chosen per account:

* ``connection_string``: the account's connection string (its ``BlobEndpoint`` /
  ``QueueEndpoint`` honoured: emulators, sovereign clouds);
* ``key``: the account name and a shared key;
* ``sas``: the account name and a SAS token;
* ``identity``: ``azure.identity``'s ``DefaultAzureCredential`` (workload identity in
  Kubernetes, managed identity on Azure hosts, the Azure CLI's login on a laptop), with an
  optional ``client_id`` choosing a user-assigned identity.

Without an explicit choice, the environment decides, as before: ``AZURE_STORAGE_CONNECTION_STRING``
(the default account), else ``AZURE_STORAGE_ACCOUNT`` with ``AZURE_STORAGE_KEY`` or
``AZURE_STORAGE_SAS_TOKEN``, else ``AZURE_STORAGE_ACCOUNT`` alone with ``DefaultAzureCredential``.
An account named in a URL (``az://container@account/key``) that is not the environment's
default account must be given its own credentials.

Secrets stay in this value: ``repr`` shows the account and the method only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AzureService = Literal["blob", "queue"]
AzureMethod = Literal["connection_string", "key", "sas", "identity"]

NO_CREDENTIALS = (
    "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT "
    "with AZURE_STORAGE_KEY (shared key), AZURE_STORAGE_SAS_TOKEN or nothing else (Entra ID "
    "through DefaultAzureCredential), or configure the account's credentials"
)


class AzureCredentialsError(ValueError):
    """Credentials that cannot work; the message names the account, never a secret."""


def connection_string_fields(connection_string: str) -> dict[str, str]:
    """``Name=value;...`` -> {name: value}; values may contain ``=`` (keys, SAS)."""
    fields: dict[str, str] = {}
    for part in connection_string.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            fields[name] = value
    return fields


@dataclass(frozen=True)
class AzureCredentials:
    account: str
    method: AzureMethod
    connection_string: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    sas: str | None = field(default=None, repr=False)
    client_id: str | None = None
    # Endpoints by service ("blob", "queue"); default https://ACCOUNT.SERVICE.core.windows.net
    endpoints: Mapping[str, str] = field(default_factory=dict)
    # Where they were configured, for error messages (variable or configuration names).
    origin: str = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> AzureCredentials:
        """The default account's credentials from the standard variables."""
        env = os.environ if environ is None else environ
        connection_string = env.get("AZURE_STORAGE_CONNECTION_STRING")
        if connection_string:
            return cls.from_connection_string(
                connection_string, origin="AZURE_STORAGE_CONNECTION_STRING"
            )
        account = env.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise AzureCredentialsError(NO_CREDENTIALS)
        if env.get("AZURE_STORAGE_KEY"):
            origin = "AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY"
            return cls(account, "key", key=env["AZURE_STORAGE_KEY"], origin=origin)
        if env.get("AZURE_STORAGE_SAS_TOKEN"):
            origin = "AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_SAS_TOKEN"
            return cls(account, "sas", sas=env["AZURE_STORAGE_SAS_TOKEN"], origin=origin)
        origin = "AZURE_STORAGE_ACCOUNT with Entra ID (DefaultAzureCredential)"
        client_id = env.get("AZURE_CLIENT_ID") or None
        return cls(account, "identity", client_id=client_id, origin=origin)

    @classmethod
    def from_connection_string(
        cls, connection_string: str, origin: str = "a connection string"
    ) -> AzureCredentials:
        fields = connection_string_fields(connection_string)
        account = fields.get("AccountName")
        if not account:
            raise AzureCredentialsError("the Azure connection string names no AccountName")
        endpoints = {
            service: fields[name].rstrip("/")
            for service, name in (("blob", "BlobEndpoint"), ("queue", "QueueEndpoint"))
            if fields.get(name)
        }
        return cls(
            account, "connection_string", connection_string, endpoints=endpoints, origin=origin
        )

    def endpoint(self, service: AzureService) -> str:
        """The account's endpoint for ``service``: scheme, host and path, no query."""
        if service in self.endpoints:
            return self.endpoints[service]
        if self.method == "connection_string":
            fields = connection_string_fields(self.connection_string or "")
            protocol = fields.get("DefaultEndpointsProtocol", "https")
            suffix = fields.get("EndpointSuffix", "core.windows.net")
            return f"{protocol}://{self.account}.{service}.{suffix}"
        return f"https://{self.account}.{service}.core.windows.net"

    def credential(self) -> Any:
        """What the SDK clients take as ``credential``; an identity credential is new each
        call and must be closed by its user (``close_credential``)."""
        if self.method == "connection_string":
            fields = connection_string_fields(self.connection_string or "")
            if fields.get("AccountKey"):
                return {"account_name": self.account, "account_key": fields["AccountKey"]}
            if fields.get("SharedAccessSignature"):
                return fields["SharedAccessSignature"].lstrip("?")
            raise AzureCredentialsError(
                f"the connection string of Azure account {self.account!r} has neither an "
                "AccountKey nor a SharedAccessSignature"
            )
        if self.method == "key":
            return {"account_name": self.account, "account_key": self.key or ""}
        if self.method == "sas":
            return (self.sas or "").lstrip("?")
        from azure.identity.aio import DefaultAzureCredential

        return DefaultAzureCredential(managed_identity_client_id=self.client_id)


async def close_credential(credential: Any) -> None:
    """Close what ``AzureCredentials.credential`` returned, if it holds connections."""
    close = getattr(credential, "close", None)
    if close is not None:
        await close()
