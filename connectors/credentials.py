"""Which credentials each location uses, as plain data the connectors receive.

Without any, every store uses its SDK's standard chain (AWS: environment, shared files,
instance or pod role; GCS: application default credentials; Azure: the environment's default
account). The composition root (the daemon, from its ``[[credentials]]`` section) installs a
``StoreCredentials`` once at start-up; ``open_store`` then hands every store the entry for its
location:

* S3 and GCS: by URL prefix (``s3://partner-lake/`` or ``s3://partner-lake/exports/``), the
  longest matching prefix wins: a profile, a role to assume, an endpoint, a region or static
  keys for S3; a service-account file for GCS;
* Azure: by storage account (``az://container@account/key`` names it; ``az://container/key``
  is the default account), one ``AzureCredentials`` each.

Secrets live in these values only (``repr`` hides them) and are never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from connectors.azure_credentials import AzureCredentials


@dataclass(frozen=True)
class AwsAccess:
    """How to reach one S3 location: every field optional, the standard chain fills in."""

    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    role_session_name: str = "replicator"
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GCSAccess:
    """A service-account key file for one GCS location (None: application defaults)."""

    service_account_file: str | None = None


@dataclass(frozen=True)
class StoreCredentials:
    s3: tuple[tuple[str, AwsAccess], ...] = ()
    gcs: tuple[tuple[str, GCSAccess], ...] = ()
    azure: Mapping[str, AzureCredentials] = field(default_factory=dict)

    def s3_for(self, url: str) -> AwsAccess | None:
        return _longest(self.s3, url)

    def gcs_for(self, url: str) -> GCSAccess | None:
        return _longest(self.gcs, url)

    def azure_for(self, account: str) -> AzureCredentials | None:
        return self.azure.get(account)


T = TypeVar("T")


def _longest(entries: tuple[tuple[str, T], ...], url: str) -> T | None:
    best: tuple[str, T] | None = None
    for prefix, value in entries:
        if url.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, value)
    return best[1] if best else None


_installed = StoreCredentials()


def install(credentials: StoreCredentials) -> None:
    """Make ``credentials`` the ones every store opened from now on uses."""
    global _installed
    _installed = credentials


def installed() -> StoreCredentials:
    return _installed
