"""Azure's failures, from the SDK and the direct requests, mapped into the
``connectors.base`` error tree. Messages carry the status, the service error code and the
request id, never the response body or credentials."""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from connectors.azure_direct import BlobRequestFailed
from connectors.base import (
    AlreadyExists,
    ContainerNotFound,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    Throttled,
    TransientError,
)

if TYPE_CHECKING:
    from connectors.azure.store import AzureStore


def _header(exc: HttpResponseError, name: str) -> str | None:
    headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
    return headers.get(name)


def error_code(exc: HttpResponseError) -> str:
    # The storage SDK sets error_code (it rewrites it for create-only conflicts); the header
    # is the fallback for errors it did not process.
    code: Any = getattr(exc, "error_code", None) or _header(exc, "x-ms-error-code")
    if isinstance(code, Enum):
        code = code.value
    return str(code) if code else ""


def _retry_after(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@contextlib.contextmanager
def mapped_errors(
    store: AzureStore, url: str, *, quiet_missing_blob: bool = False
) -> Iterator[None]:
    """Map SDK failures into connectors.base errors. Messages carry the status, the
    service error code and the request id, never the response body or credentials."""
    try:
        yield
    except StoreError:
        raise
    except ClientAuthenticationError as exc:
        if exc.response is not None:
            raise_http(store, exc, url)
        # No answer from the service: the credential could not get an Entra ID token.
        first_line = str(exc.message or exc).splitlines()[0][:300]
        raise PermissionDenied(
            f"no Entra ID token for Azure account {store._account_name} "
            f"({store._origin}): {first_line}",
            url=url,
        ) from None
    except HttpResponseError as exc:
        if quiet_missing_blob and error_code(exc) == "BlobNotFound":
            return
        raise_http(store, exc, url)
    except BlobRequestFailed as exc:
        raise_status(store, exc.status, exc.error_code, exc.reason, exc.headers, url)
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(
            f"cannot reach {store._endpoint}: {type(exc).__name__}", url=url
        ) from None
    except AzureError as exc:
        raise TransientError(
            f"request to {store._endpoint} failed: {type(exc).__name__}", url=url
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransientError(
            f"cannot reach {store._endpoint}: {type(exc).__name__}", url=url
        ) from None


def raise_http(store: AzureStore, exc: HttpResponseError, url: str) -> NoReturn:
    headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
    raise_status(store, exc.status_code or 0, error_code(exc), exc.reason, headers, url)


def raise_status(
    store: AzureStore,
    status: int,
    code: str,
    reason: str | None,
    headers: Mapping[str, str],
    url: str,
) -> NoReturn:
    request_id = headers.get("x-ms-request-id")
    detail = f"HTTP {status} {code or reason or ''}".strip()
    if request_id:
        detail += f", request id {request_id}"
    if code == "ContainerNotFound":
        raise ContainerNotFound(
            f"container {store._container_name!r} does not exist ({detail})", url=url
        ) from None
    if code in {"BlobAlreadyExists", "ContainerAlreadyExists"}:
        raise AlreadyExists(f"already exists ({detail})", url=url) from None
    if code in {"Md5Mismatch", "Crc64Mismatch"}:
        raise IntegrityError(
            f"the service received bytes that do not match their checksum ({detail})", url=url
        ) from None
    if status == 404:
        raise NotFound(f"not found ({detail})", url=url) from None
    if status in {401, 403}:
        raise PermissionDenied(
            f"{store._endpoint} refused the credentials or their permissions ({detail}); "
            f"check the credentials of account {store._account_name} ({store._origin})",
            url=url,
        ) from None
    if status in {409, 412}:
        raise PreconditionFailed(
            f"the object is not in the state the request requires ({detail})", url=url
        ) from None
    if status in {429, 503}:
        raise Throttled(
            f"{store._endpoint} is throttling requests ({detail})",
            url=url,
            retry_after=_retry_after(headers.get("Retry-After")),
        ) from None
    if status >= 500 or status in {0, 408}:
        raise TransientError(f"{store._endpoint} failed ({detail})", url=url) from None
    raise InvalidArgument(f"the service refused the request ({detail})", url=url) from None
