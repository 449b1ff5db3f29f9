"""Server-side copies into an AzureStore: Copy Blob within one storage account, polled
until it settles, then the attributes asked for."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions

from connectors.azure.fields import content_settings
from connectors.azure.names import check_attributes
from connectors.base import (
    AlreadyExists,
    InvalidArgument,
    ObjectAttributes,
    ObjectMeta,
    PreconditionFailed,
    TransientError,
)

if TYPE_CHECKING:
    from connectors.azure.store import AzureStore

_COPY_POLL_S = (0.1, 2.0)


class AzureServerSideCopy:
    """The server-side copies into one store."""

    def __init__(self, store: AzureStore) -> None:
        self._store = store

    async def copy(
        self,
        origin: AzureStore,
        source_key: str,
        dest_key: str,
        if_match: str | None,
        attributes: ObjectAttributes | None,
        create_only: bool,
        dest_if_match: str | None,
    ) -> ObjectMeta:
        """Copy Blob inside the account, from ``source_key`` of ``origin`` (a store of this
        account rooted at its own container and prefix). The source is named by its blob
        URL: the request's own shared key authorises a source in the same account, and with
        a SAS credential the URL carries the SAS. Azurite copies within one instance
        synchronously; Azure may answer ``pending``, so the copy status is polled until it
        settles."""
        source = await origin._blob(origin._name(source_key))
        dest = await self._store._blob(self._store._name(dest_key))
        url = self._store.url_for(dest_key)
        if attributes is not None:
            check_attributes(attributes, url)
        if create_only and dest_if_match is not None:
            raise InvalidArgument("create_only and if_match exclude each other", url=url)
        options: dict[str, Any] = {}
        if if_match is not None:
            options.update(
                source_etag=if_match, source_match_condition=MatchConditions.IfNotModified
            )
        # Conditions on the destination blob, checked by the service with the copy.
        if create_only:
            options.update(match_condition=MatchConditions.IfMissing)
        if dest_if_match is not None:
            options.update(etag=dest_if_match, match_condition=MatchConditions.IfNotModified)
        if attributes is not None and attributes.user_metadata:
            options["metadata"] = dict(attributes.user_metadata)
        try:
            with self._store._errors(url):
                response = await dest.start_copy_from_url(source.url, **options)
        except PreconditionFailed as exc:
            if create_only:
                raise AlreadyExists(str(exc), url=url) from None
            raise
        with self._store._errors(url):
            status = response.get("copy_status")
            delay = _COPY_POLL_S[0]
            while status == "pending":
                await asyncio.sleep(delay)
                delay = min(delay * 2, _COPY_POLL_S[1])
                props = await dest.get_blob_properties()
                status = props.copy.status
                if status not in {"pending", "success"}:
                    raise TransientError(
                        f"server-side copy ended {status}: {props.copy.status_description}",
                        url=url,
                    )
            if attributes is not None:
                props = await dest.get_blob_properties()
                settings = content_settings(attributes)
                settings.content_md5 = props.content_settings.content_md5
                done = await dest.set_http_headers(
                    settings, etag=props.etag, match_condition=MatchConditions.IfNotModified
                )
                if not attributes.user_metadata:
                    await dest.set_blob_metadata(
                        {}, etag=done["etag"], match_condition=MatchConditions.IfNotModified
                    )
        return await self._store.head(dest_key)
