"""Fetching and caching the public keys that pushed messages are verified with: SNS signing
certificates and the JSON Web Key Sets of Google and Entra ID. HTTPS only; a private CA
bundle can be named (proxies, test beds). Keys are cached, and a key set is fetched again at
most once a minute when a token names a key id it does not hold (key rotation)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from typing import Any

import aiohttp
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from replicator.errors import ReplicatorError

_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10)
_MAX_BODY = 256 * 1024


class KeyFetchError(ReplicatorError):
    """A key or certificate could not be fetched or read; the message names the URL."""


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    context = (
        ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    )
    return context


async def _get(url: str, context: ssl.SSLContext) -> bytes:
    if not url.startswith("https://"):
        raise KeyFetchError(f"refusing to fetch keys over anything but HTTPS: {url}")
    try:
        async with (
            aiohttp.ClientSession(timeout=_FETCH_TIMEOUT) as session,
            session.get(url, ssl=context, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise KeyFetchError(f"{url} answered {response.status}")
            body = await response.content.read(_MAX_BODY + 1)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise KeyFetchError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None
    if len(body) > _MAX_BODY:
        raise KeyFetchError(f"{url} sent more than {_MAX_BODY} bytes")
    return body


class CertificateCache:
    """SNS signing certificates by URL (an SNS topic signs with few certificates)."""

    def __init__(self, ca_file: str | None = None, size: int = 32) -> None:
        self._context = ssl_context(ca_file)
        self._size = size
        self._keys: OrderedDict[str, tuple[RSAPublicKey, float]] = OrderedDict()
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def public_key(self, url: str) -> RSAPublicKey:
        async with self._lock:
            cached = self._keys.get(url)
            if cached is not None and cached[1] > time.time():
                self._keys.move_to_end(url)
                return cached[0]
            self.fetches += 1
            body = await _get(url, self._context)
            try:
                certificate = x509.load_pem_x509_certificate(body)
            except ValueError:
                raise KeyFetchError(f"{url} is not a PEM certificate") from None
            expires = certificate.not_valid_after_utc.timestamp()
            if expires <= time.time():
                raise KeyFetchError(f"the certificate at {url} has expired")
            key = certificate.public_key()
            if not isinstance(key, RSAPublicKey):
                raise KeyFetchError(f"the certificate at {url} does not hold an RSA key")
            self._keys[url] = (key, expires)
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)
            return key


class KeySetCache:
    """One JSON Web Key Set, fetched on first use and again when a new key id shows up."""

    refetch_after_s = 60.0

    def __init__(self, url: str, ca_file: str | None = None) -> None:
        self.url = url
        self._context = ssl_context(ca_file)
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str) -> Any:
        """The public key with id ``kid``, or None when the key set has none."""
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at > self.refetch_after_s:
                self.fetches += 1
                self._fetched_at = time.monotonic()
                body = await _get(self.url, self._context)
                try:
                    key_set = jwt.PyJWKSet.from_json(body.decode())
                except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError, UnicodeError):
                    raise KeyFetchError(f"{self.url} is not a usable JSON Web Key Set") from None
                self._keys = {k.key_id: k.key for k in key_set.keys if k.key_id}
            return self._keys.get(kid)
