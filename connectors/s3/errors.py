"""S3's and botocore's failures mapped into the ``connectors.base`` error tree."""

from __future__ import annotations

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from connectors.base import (
    AlreadyExists,
    ContainerNotFound,
    IntegrityError,
    InvalidArgument,
    InvalidKey,
    NotFound,
    NotSupported,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    Throttled,
    TransientError,
    parse_retry_after,
)

KEY_RULE = " bytes of UTF-8 (S3 object key rule)"

_BUCKET_MISSING = frozenset({"NoSuchBucket"})
_OBJECT_MISSING = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchUpload", "NotFound", "404"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidSecurity",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "401",
        "403",
    }
)
_THROTTLED = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequests",
        "TooManyRequestsException",
        "429",
        # A HEAD answer has no body to name its code; S3's bodiless 503 is its SlowDown.
        "503",
    }
)
# 4xx codes S3 documents as worth retrying: a request the server gave up waiting for, and a
# conditional write that lost a race with another one in flight (the retry then sees 412).
_TRANSIENT_4XX = frozenset({"RequestTimeout", "OperationAborted", "ConditionalRequestConflict"})
_INTEGRITY = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_BAD_KEY = frozenset({"KeyTooLongError"})
_NOT_SUPPORTED = frozenset({"NotImplemented", "501"})


class UnsatisfiableRange(InvalidArgument):
    """S3's 416: the range starts at or past the end of the object."""


def error_code(exc: ClientError) -> str:
    return str((exc.response.get("Error") or {}).get("Code") or "")


def map_error(
    exc: BaseException,
    *,
    url: str,
    bucket: str,
    endpoint: str,
    create_only: bool = False,
    missing_key_is_mismatch: bool = False,
) -> StoreError:
    """Translate an SDK or transport failure into the connectors.base error tree.

    ``create_only``: a failed precondition means the key exists (If-None-Match: *).
    ``missing_key_is_mismatch``: a missing key fails an If-Match write's precondition.
    """
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ClientError):
        return _map_client_error(exc, url, bucket, endpoint, create_only, missing_key_is_mismatch)
    if isinstance(exc, FlexibleChecksumError):
        return IntegrityError(f"S3 response failed its checksum: {exc}", url=url)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return PermissionDenied(f"no usable AWS credentials: {exc}", url=url)
    if isinstance(exc, ParamValidationError):
        return InvalidArgument(f"S3 request refused before sending: {exc}", url=url)
    if isinstance(exc, BotoConnectionError):
        return TransientError(f"S3 endpoint {endpoint} is unreachable: {exc}", url=url)
    if isinstance(
        exc, HTTPClientError | IncompleteReadError | aiohttp.ClientError | OSError | TimeoutError
    ):
        return TransientError(f"S3 endpoint {endpoint} failed: {exc!r}", url=url)
    if isinstance(exc, BotoCoreError):
        return StoreError(f"S3 client error: {exc}", url=url)
    return StoreError(f"unexpected S3 failure: {exc!r}", url=url)


def _map_client_error(
    exc: ClientError,
    url: str,
    bucket: str,
    endpoint: str,
    create_only: bool,
    missing_key_is_mismatch: bool,
) -> StoreError:
    error = exc.response.get("Error") or {}
    metadata = exc.response.get("ResponseMetadata") or {}
    status = int(metadata.get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status)
    detail = f"{code}: {error.get('Message') or 'no message'} (HTTP {status})"
    if code in _BUCKET_MISSING:
        return ContainerNotFound(f"S3 bucket {bucket!r} does not exist ({detail})", url=url)
    if code == "PreconditionFailed" or status == 412:
        if create_only:
            return AlreadyExists(f"object already exists ({detail})", url=url)
        return PreconditionFailed(f"precondition failed ({detail})", url=url)
    if code in _OBJECT_MISSING or status == 404:
        if missing_key_is_mismatch and code != "NoSuchUpload":
            return PreconditionFailed(
                f"object does not exist, so If-Match fails ({detail})", url=url
            )
        if code == "404":
            # A HEAD response has no body to say whether the key or the bucket is missing;
            # S3Store.head asks the bucket before it reports a missing key.
            return NotFound(f"not found: no such key, or no bucket {bucket!r} ({detail})", url=url)
        return NotFound(f"not found in S3 bucket {bucket!r} ({detail})", url=url)
    if code == "MethodNotAllowed" or status == 405:
        # What S3 answers for a version id that names a delete marker.
        return NotFound(f"that version is a delete marker ({detail})", url=url)
    if code == "InvalidRange" or status == 416:
        return UnsatisfiableRange(f"range not satisfiable ({detail})", url=url)
    if code in _THROTTLED or status == 429:
        headers = metadata.get("HTTPHeaders") or {}
        return Throttled(
            f"S3 is throttling requests ({detail})",
            url=url,
            retry_after=parse_retry_after(headers.get("retry-after")),
        )
    if code in _DENIED or status in (401, 403):
        return PermissionDenied(f"S3 refused the credentials or access ({detail})", url=url)
    if code in _INTEGRITY:
        return IntegrityError(f"S3 rejected the bytes as damaged ({detail})", url=url)
    if code in _BAD_KEY:
        return InvalidKey(f"S3 refused the key: at most 1024{KEY_RULE} ({detail})", url=url)
    if code in _NOT_SUPPORTED:
        return NotSupported(f"the S3 endpoint {endpoint} lacks this operation ({detail})", url=url)
    if code in _TRANSIENT_4XX or status >= 500:
        return TransientError(f"S3 endpoint {endpoint} failed ({detail})", url=url)
    if status == 409:
        return AlreadyExists(f"conflict ({detail})", url=url)
    if 400 <= status < 500:
        return InvalidArgument(f"S3 refused the request ({detail})", url=url)
    return StoreError(f"S3 error ({detail})", url=url)
