"""Request reporting for the AWS connectors: botocore hooks that tell the context's request
observer (``connectors.base.observing``) of every HTTP attempt a client sends, by operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import RequestClass, StoreRequest, report_request

# Each S3 operation the connector uses, as providers bill it (connectors.base.RequestClass).
_REQUEST_CLASSES = {
    "GetObject": RequestClass.GET,
    "HeadObject": RequestClass.HEAD,
    "HeadBucket": RequestClass.HEAD,
    "PutObject": RequestClass.PUT,
    "CreateMultipartUpload": RequestClass.PUT,
    "UploadPart": RequestClass.PUT,
    "CompleteMultipartUpload": RequestClass.PUT,
    "CreateBucket": RequestClass.PUT,
    "ListObjectsV2": RequestClass.LIST,
    "ListMultipartUploads": RequestClass.LIST,
    "ListParts": RequestClass.LIST,
    "CopyObject": RequestClass.COPY,
    "UploadPartCopy": RequestClass.COPY,
    "DeleteObject": RequestClass.DELETE,
    "AbortMultipartUpload": RequestClass.DELETE,
}
_BY_METHOD = {
    "GET": RequestClass.GET,
    "HEAD": RequestClass.HEAD,
    "DELETE": RequestClass.DELETE,
}


class S3RequestReporter:
    """botocore hooks reporting every HTTP attempt (retries included, as the store sees
    them) to the context's request observer (``connectors.base.observing``)."""

    def __init__(self, location: str) -> None:
        self.location = location

    @staticmethod
    def _class(event_name: str, method: str) -> RequestClass:
        operation = event_name.rsplit(".", 1)[-1]
        return _REQUEST_CLASSES.get(operation) or _BY_METHOD.get(method, RequestClass.PUT)

    def before_send(self, request: Any, event_name: str, **_: Any) -> None:
        sent = int(request.headers.get("Content-Length") or 0)
        kind = self._class(event_name, request.method)
        report_request(StoreRequest(self.location, kind, bytes_sent=sent))

    def response_received(
        self, event_name: str, response_dict: Mapping[str, Any] | None, **_: Any
    ) -> None:
        # The object's bytes: the body of a successful GetObject, whole or one range.
        if response_dict is None or not 200 <= int(response_dict.get("status_code", 0)) < 300:
            return
        length = int(response_dict.get("headers", {}).get("content-length") or 0)
        if length:
            report_request(
                StoreRequest(self.location, RequestClass.GET, bytes_received=length, requests=0)
            )
