"""The ``[ingest]`` section of the configuration: how each HTTP receiver verifies what is
pushed to it (``verification`` does the verifying). Plain settings, so that reading a
configuration does not import the receivers' HTTP and cryptography libraries."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from replicator.pipeline.rules import Duration

Method = Literal["token", "sns-signature", "oidc", "entra"]

#: Event Grid's own Entra application, the ``appid``/``azp`` of the tokens it sends.
EVENT_GRID_APP_ID = "4962773b-9cdb-44cf-a8bf-237846a00ab7"

ALLOWED_METHODS: dict[str, tuple[str, ...]] = {
    "s3": ("token", "sns-signature"),
    "gcs": ("token", "oidc"),
    "azure": ("token", "entra"),
}


class ReceiverAuth(BaseModel):
    """How one receiver verifies what is pushed to it (``[ingest.s3]``, ``[ingest.gcs]``,
    ``[ingest.azure]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    verify: Method = "token"
    # sns-signature: where signing certificates may come from, which topics may push.
    sns_cert_hosts: tuple[str, ...] = ("sns.*.amazonaws.com", "sns.*.amazonaws.com.cn")
    sns_topic_arns: tuple[str, ...] = ()
    max_age: Duration = timedelta(hours=1)
    # oidc / entra: whom the token must be for, and from whom.
    audience: str | None = None
    service_accounts: tuple[str, ...] = ()
    tenant_id: str | None = None
    app_ids: tuple[str, ...] = (EVENT_GRID_APP_ID,)
    # Overrides: key set and issuers (sovereign clouds, proxies, test beds), a private CA.
    jwks_url: str | None = None
    issuers: tuple[str, ...] = ()
    ca_file: str | None = None
    replay_window: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _complete(self) -> ReceiverAuth:
        if self.verify == "oidc" and not (self.audience and self.service_accounts):
            raise ValueError('verify = "oidc" needs audience and service_accounts')
        if self.verify == "entra" and not (self.audience and (self.tenant_id or self.issuers)):
            raise ValueError('verify = "entra" needs audience and tenant_id')
        return self


class IngestAuthSection(BaseModel):
    """The ``[ingest]`` section: one ``ReceiverAuth`` per receiver."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    s3: ReceiverAuth = ReceiverAuth()
    gcs: ReceiverAuth = ReceiverAuth()
    azure: ReceiverAuth = ReceiverAuth()

    @model_validator(mode="after")
    def _methods(self) -> IngestAuthSection:
        for receiver, allowed in ALLOWED_METHODS.items():
            method = getattr(self, receiver).verify
            if method not in allowed:
                raise ValueError(
                    f"ingest.{receiver}: verify = {method!r} does not apply; one of {allowed}"
                )
        return self

    def needs_token(self) -> bool:
        return any(getattr(self, r).verify == "token" for r in ALLOWED_METHODS)
