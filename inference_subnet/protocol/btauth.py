"""``btauth/1``: hotkey-signed HTTP requests, byte-for-byte compatible with bittensor's ``http_auth``.

The signed payload is the newline-joined UTF-8 of: protocol (``btauth/1``), scheme (``sr25519`` or
``ed25519``), uppercase method, request target (path plus ``?query`` as sent), lowercase hex sha256 of the
raw body, decimal nanosecond nonce, sender ss58, receiver ss58 (``-`` when unbound). Any peer that speaks
bittensor 11's ``http_auth`` interoperates in both directions.

Verification order matters for safety: header shape, receiver binding, freshness, signature, and only then
the replay store, so unauthenticated traffic can never fill the store or block a legitimate sender.
The replay store is shared (Redis ``SET NX EX``) so every worker of a miner sees the same nonces.
"""

from __future__ import annotations

from hashlib import sha256
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from bittensor_core import verify as _verify_signature
from bittensor_wallet import Keypair

PROTOCOL = "btauth/1"
VERSION = "1"

HEADER_VERSION = "X-Bittensor-Version"
HEADER_HOTKEY = "X-Bittensor-Hotkey"
HEADER_RECEIVER = "X-Bittensor-Receiver"
HEADER_NONCE = "X-Bittensor-Nonce"
HEADER_CRYPTO = "X-Bittensor-Crypto"
HEADER_SIGNATURE = "X-Bittensor-Signature"

DEFAULT_MAX_AGE = 10.0
DEFAULT_ALLOWED_SKEW = 2.0

CRYPTO_ED25519 = 0
CRYPTO_SR25519 = 1
SCHEMES: dict[int, str] = {CRYPTO_ED25519: "ed25519", CRYPTO_SR25519: "sr25519"}
_SCHEME_CODES: dict[str, int] = {name: code for code, name in SCHEMES.items()}
_DEFAULT_SCHEME = "sr25519"
_NO_RECEIVER = "-"

_V, _HK, _RCV, _NONCE, _CRYPTO, _SIG = (
    h.lower()
    for h in (HEADER_VERSION, HEADER_HOTKEY, HEADER_RECEIVER, HEADER_NONCE, HEADER_CRYPTO, HEADER_SIGNATURE)
)


class AuthError(Exception):
    """A signed request failed authentication. Messages never echo secrets and are safe to return."""


class MalformedAuth(AuthError):
    """A required header is missing or unparseable."""


class WrongReceiver(AuthError):
    """The request was signed for another receiving hotkey, or for none."""


class StaleRequest(AuthError):
    """The nonce is outside the freshness window (too old, or too far ahead)."""


class ReplayedRequest(AuthError):
    """This (hotkey, nonce) pair was already accepted inside the window."""


class BadSignature(AuthError):
    """The signature does not verify against the claimed hotkey."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated sender of a verified request."""

    hotkey_ss58: str
    nonce_ns: int
    crypto_type: int


class NonceStore(Protocol):
    """Synchronous replay store (the shape bittensor's ``http_auth`` uses)."""

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool: ...


class AsyncNonceStore(Protocol):
    """Asynchronous replay store, e.g. :class:`inference_subnet.miner.nonces.RedisNonceStore`."""

    async def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool: ...


def build_payload(
    *,
    scheme: str,
    method: str,
    path: str,
    body: bytes,
    nonce_ns: int,
    sender_ss58: str,
    receiver_ss58: str | None,
) -> bytes:
    """The exact bytes that are signed."""
    return _payload(scheme, method, path, body, nonce_ns, sender_ss58, receiver_ss58)


def _payload(
    scheme: str, method: str, path: str, body: bytes, nonce_ns: int, sender: str, receiver: str | None
) -> bytes:
    # Positional and one f-string: this runs on every request a miner receives.
    return (
        f"{PROTOCOL}\n{scheme}\n{method.upper()}\n{path}\n{sha256(body).hexdigest()}\n"
        f"{nonce_ns}\n{sender}\n{receiver or _NO_RECEIVER}"
    ).encode()


def sign(
    keypair: Keypair,
    *,
    method: str,
    path: str,
    body: bytes = b"",
    receiver_ss58: str | None = None,
    nonce_ns: int | None = None,
) -> dict[str, str]:
    """The auth headers for one request signed by ``keypair`` (a hotkey). Sign every retry afresh."""
    scheme = SCHEMES.get(keypair.crypto_type)
    if scheme is None:
        raise ValueError(f"cannot sign btauth requests with crypto type {keypair.crypto_type}")
    nonce = time.time_ns() if nonce_ns is None else int(nonce_ns)
    payload = _payload(scheme, method, path, body, nonce, keypair.ss58_address, receiver_ss58)
    headers = {
        HEADER_VERSION: VERSION,
        HEADER_HOTKEY: keypair.ss58_address,
        HEADER_NONCE: str(nonce),
        HEADER_SIGNATURE: "0x" + bytes(keypair.sign(payload)).hex(),
    }
    if scheme != _DEFAULT_SCHEME:
        headers[HEADER_CRYPTO] = scheme
    if receiver_ss58 is not None:
        headers[HEADER_RECEIVER] = receiver_ss58
    return headers


def sender_of(headers: Mapping[str, str]) -> str | None:
    """The claimed sender hotkey, before any verification (for a cheap blacklist check first)."""
    for key, value in headers.items():
        if key.lower() == _HK:
            return value
    return None


def authenticate(
    headers: Mapping[str, str],
    body: bytes,
    *,
    method: str,
    path: str,
    self_hotkey_ss58: str,
    max_age: float = DEFAULT_MAX_AGE,
    allowed_skew: float = DEFAULT_ALLOWED_SKEW,
    require_receiver: bool = True,
    now_ns: int | None = None,
    lowercase_names: bool = False,
) -> Caller:
    """Every check but replay: shape, receiver, freshness, signature. Callers then consult a nonce store
    (and must: a caller returned here may be a replay). ``lowercase_names`` as for :func:`verify_async`."""
    return _authenticate(
        headers, body, method, path, self_hotkey_ss58, max_age, allowed_skew, require_receiver, now_ns,
        lowercase_names,
    )


def _authenticate(
    headers: Mapping[str, str],
    body: bytes,
    method: str,
    path: str,
    self_hotkey_ss58: str,
    max_age: float,
    allowed_skew: float,
    require_receiver: bool,
    now_ns: int | None,
    lowercase_names: bool = False,
) -> Caller:
    lowered = headers if lowercase_names else {key.lower(): value for key, value in headers.items()}
    if lowered.get(_V) != VERSION:
        raise MalformedAuth(f"missing or unsupported {HEADER_VERSION} (expected {VERSION!r})")
    sender = lowered.get(_HK)
    if not sender:
        raise MalformedAuth(f"missing {HEADER_HOTKEY}")
    raw_nonce = lowered.get(_NONCE)
    if raw_nonce is None:
        raise MalformedAuth(f"missing {HEADER_NONCE}")
    try:
        nonce = int(raw_nonce)
    except ValueError:
        raise MalformedAuth(f"{HEADER_NONCE} is not a decimal integer") from None
    crypto_type = _parse_scheme(lowered.get(_CRYPTO, _DEFAULT_SCHEME))
    raw_signature = lowered.get(_SIG)
    if raw_signature is None:
        raise MalformedAuth(f"missing {HEADER_SIGNATURE}")
    try:
        signature = bytes.fromhex(raw_signature.removeprefix("0x"))
    except ValueError:
        raise MalformedAuth(f"{HEADER_SIGNATURE} is not hex") from None

    receiver = lowered.get(_RCV)
    if receiver is None:
        if require_receiver:
            raise WrongReceiver(f"missing {HEADER_RECEIVER}: this server requires receiver-bound requests")
    elif receiver != self_hotkey_ss58:
        raise WrongReceiver("request was signed for a different receiving hotkey")

    now = time.time_ns() if now_ns is None else now_ns
    if now - nonce > max_age * 1e9:
        raise StaleRequest(f"nonce is older than the {max_age:g}s freshness window")
    if nonce - now > allowed_skew * 1e9:
        raise StaleRequest(f"nonce is more than {allowed_skew:g}s in the future")

    payload = _payload(SCHEMES[crypto_type], method, path, body, nonce, sender, receiver)
    try:
        # bittensor-core's sp-core verifier (the SDK's own primitive, without the SDK).
        valid = _verify_signature(payload, signature, sender, crypto_type)
    except ValueError:  # undecodable ss58 address, or a signature of the wrong length
        raise MalformedAuth("invalid hotkey address or signature encoding") from None
    if not valid:
        raise BadSignature("signature does not verify against the claimed hotkey")
    return Caller(hotkey_ss58=sender, nonce_ns=nonce, crypto_type=crypto_type)


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    method: str,
    path: str,
    self_hotkey_ss58: str,
    nonce_store: NonceStore,
    max_age: float = DEFAULT_MAX_AGE,
    allowed_skew: float = DEFAULT_ALLOWED_SKEW,
    require_receiver: bool = True,
    now_ns: int | None = None,
) -> Caller:
    """Authenticate a request with a synchronous replay store; raises an :class:`AuthError` subclass."""
    caller = _authenticate(
        headers, body, method, path, self_hotkey_ss58, max_age, allowed_skew, require_receiver, now_ns
    )
    if not nonce_store.check_and_store(caller.hotkey_ss58, caller.nonce_ns):
        raise ReplayedRequest("this nonce was already accepted from this hotkey")
    return caller


async def verify_async(
    headers: Mapping[str, str],
    body: bytes,
    *,
    method: str,
    path: str,
    self_hotkey_ss58: str,
    nonce_store: AsyncNonceStore,
    max_age: float = DEFAULT_MAX_AGE,
    allowed_skew: float = DEFAULT_ALLOWED_SKEW,
    require_receiver: bool = True,
    now_ns: int | None = None,
    lowercase_names: bool = False,
) -> Caller:
    """:func:`verify` with an asynchronous (shared, Redis-backed) replay store.

    ``lowercase_names``: every header name in ``headers`` is lowercase already (an ASGI server's are), so
    the copy that folds their case is skipped."""
    caller = _authenticate(
        headers, body, method, path, self_hotkey_ss58, max_age, allowed_skew, require_receiver, now_ns,
        lowercase_names,
    )
    if not await nonce_store.check_and_store(caller.hotkey_ss58, caller.nonce_ns):
        raise ReplayedRequest("this nonce was already accepted from this hotkey")
    return caller


def _parse_scheme(value: str) -> int:
    normalized = value.strip().lower()
    if normalized in _SCHEME_CODES:
        return _SCHEME_CODES[normalized]
    if normalized.isdigit() and int(normalized) in SCHEMES:
        return int(normalized)
    raise MalformedAuth(f"unsupported {HEADER_CRYPTO}")
