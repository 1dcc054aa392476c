"""btauth/1 against bittensor 11.3.0's own ``http_auth``: same bytes, same headers, both directions."""

from __future__ import annotations

import time

import bittensor.http_auth as bt_auth
import pytest
from bittensor_core import Keypair as CoreKeypair
from bittensor_wallet import Keypair
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_subnet.miner.nonces import RedisNonceStore, SyncRedisNonceStore
from inference_subnet.protocol import btauth
from inference_subnet.store.redis import connect_sync

SCHEMES = {"sr25519": 1, "ed25519": 0}
MINER = Keypair.create_from_uri("//MinerHot")
RECEIVER = MINER.ss58_address


class MemoryStore:
    """The plain set any NonceStore implementation must behave like (for checks that need no Redis)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        if (hotkey_ss58, nonce_ns) in self.seen:
            return False
        self.seen.add((hotkey_ss58, nonce_ns))
        return True


def ours(scheme: str, uri: str = "//Validator") -> Keypair:
    return Keypair.create_from_uri(uri, crypto_type=SCHEMES[scheme])


def theirs(scheme: str, uri: str = "//Validator") -> CoreKeypair:
    return CoreKeypair.create_from_uri(uri, crypto_type=SCHEMES[scheme])


def our_verify(headers, body, path="/tasks/arithmetic", **kw):
    kw.setdefault("nonce_store", MemoryStore())
    return btauth.verify(headers, body, method="POST", path=path, self_hotkey_ss58=RECEIVER, **kw)


# -- interop ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["sr25519", "ed25519"])
@pytest.mark.parametrize("path", ["/tasks/arithmetic", "/tasks/arithmetic?x=1&y=%20z", "/"])
def test_our_signature_verifies_with_bittensor(scheme: str, path: str) -> None:
    kp = ours(scheme)
    body = b'{"op":"add","a":1,"b":2}'
    headers = btauth.sign(kp, method="post", path=path, body=body, receiver_ss58=RECEIVER)
    caller = bt_auth.verify(
        headers, body, method="POST", path=path, self_hotkey_ss58=RECEIVER,
        nonce_store=bt_auth.InMemoryNonceStore(),
    )
    assert caller.hotkey_ss58 == kp.ss58_address
    assert caller.crypto_type == SCHEMES[scheme]
    assert (btauth.HEADER_CRYPTO in headers) == (scheme == "ed25519")


@pytest.mark.parametrize("scheme", ["sr25519", "ed25519"])
@pytest.mark.parametrize("path", ["/tasks/arithmetic", "/tasks/arithmetic?q=a%2Fb&n=2"])
def test_bittensor_signature_verifies_with_ours(scheme: str, path: str) -> None:
    kp = theirs(scheme)
    body = b'{"op":"multiply","a":-3,"b":7}'
    headers = bt_auth.sign(kp, method="POST", path=path, body=body, receiver_ss58=RECEIVER)
    caller = our_verify(headers, body, path=path)
    assert caller.hotkey_ss58 == kp.ss58_address
    assert caller.crypto_type == SCHEMES[scheme]


@pytest.mark.parametrize("scheme", ["sr25519", "ed25519"])
def test_headers_identical_to_bittensor(scheme: str) -> None:
    """Same key, same inputs, same nonce: the same header names and values (ed25519 signatures are
    deterministic, so for it even the signature matches byte for byte)."""
    nonce = time.time_ns()
    a = btauth.sign(ours(scheme), method="POST", path="/p?x=1", body=b"abc", receiver_ss58=RECEIVER, nonce_ns=nonce)
    b = bt_auth.sign(theirs(scheme), method="POST", path="/p?x=1", body=b"abc", receiver_ss58=RECEIVER,
                     nonce_ns=nonce)
    assert set(a) == set(b)
    for name in a:
        if name != btauth.HEADER_SIGNATURE or scheme == "ed25519":
            assert a[name] == b[name], name


def test_unbound_request_interop() -> None:
    """Without a receiver both sides sign ``-`` and both refuse it unless receivers are optional."""
    kp = ours("sr25519")
    headers = btauth.sign(kp, method="GET", path="/capacity")
    assert btauth.HEADER_RECEIVER not in headers
    bt_auth.verify(headers, b"", method="GET", path="/capacity", self_hotkey_ss58=RECEIVER,
                   require_receiver=False, nonce_store=bt_auth.InMemoryNonceStore())
    with pytest.raises(btauth.WrongReceiver):
        btauth.verify(headers, b"", method="GET", path="/capacity", self_hotkey_ss58=RECEIVER,
                      nonce_store=MemoryStore())
    theirs_headers = bt_auth.sign(theirs("ed25519"), method="GET", path="/capacity")
    btauth.verify(theirs_headers, b"", method="GET", path="/capacity", self_hotkey_ss58=RECEIVER,
                  require_receiver=False, nonce_store=MemoryStore())


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["sr25519", "ed25519"]),
    method=st.sampled_from(["get", "POST", "Put", "delete"]),
    path=st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=60),
    body=st.binary(max_size=300),
    nonce=st.integers(min_value=0, max_value=2**63),
    receiver=st.one_of(st.none(), st.just(RECEIVER)),
)
def test_build_payload_byte_for_byte(scheme, method, path, body, nonce, receiver) -> None:
    args = {"scheme": scheme, "method": method, "path": path, "body": body, "nonce_ns": nonce,
            "sender_ss58": "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty", "receiver_ss58": receiver}
    assert btauth.build_payload(**args) == bt_auth.build_payload(**args)


def test_payload_layout_is_the_documented_one() -> None:
    payload = btauth.build_payload(scheme="sr25519", method="post", path="/a?b=c", body=b"", nonce_ns=7,
                                   sender_ss58="S", receiver_ss58=None)
    assert payload == (
        b"btauth/1\nsr25519\nPOST\n/a?b=c\n"
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n7\nS\n-"
    )


# -- refusals: the same class as bittensor for the same input ------------------------------------------


def signed(**kw) -> tuple[dict[str, str], bytes]:
    body = kw.pop("body", b'{"op":"add","a":1,"b":2}')
    kw.setdefault("receiver_ss58", RECEIVER)
    return btauth.sign(ours("sr25519"), method="POST", path="/tasks/arithmetic", body=body, **kw), body


def both_refuse(headers, body, ours_cls, **kw) -> None:
    our_name = ours_cls.__name__
    with pytest.raises(ours_cls):
        our_verify(headers, body, **kw)
    with pytest.raises(bt_auth.AuthError) as their:
        bt_auth.verify(headers, body, method="POST", path=kw.get("path", "/tasks/arithmetic"),
                       self_hotkey_ss58=RECEIVER, nonce_store=bt_auth.InMemoryNonceStore(),
                       **{k: v for k, v in kw.items() if k != "path"})
    assert type(their.value).__name__ == our_name


def test_forged_signature() -> None:
    headers, body = signed()
    sig = bytearray(bytes.fromhex(headers[btauth.HEADER_SIGNATURE][2:]))
    sig[5] ^= 0xFF
    headers[btauth.HEADER_SIGNATURE] = "0x" + sig.hex()
    both_refuse(headers, body, btauth.BadSignature)


def test_signature_by_another_key_claiming_the_hotkey() -> None:
    headers, body = signed()
    impostor = btauth.sign(ours("sr25519", "//Mallory"), method="POST", path="/tasks/arithmetic", body=body,
                           receiver_ss58=RECEIVER, nonce_ns=int(headers[btauth.HEADER_NONCE]))
    headers[btauth.HEADER_SIGNATURE] = impostor[btauth.HEADER_SIGNATURE]
    both_refuse(headers, body, btauth.BadSignature)


def test_tampered_body_and_path() -> None:
    headers, body = signed()
    both_refuse(headers, body + b" ", btauth.BadSignature)
    both_refuse(headers, body, btauth.BadSignature, path="/tasks/other")


def test_scheme_switch_is_not_tried_both_ways() -> None:
    headers, body = signed()
    headers[btauth.HEADER_CRYPTO] = "ed25519"
    both_refuse(headers, body, btauth.BadSignature)


def test_wrong_receiver() -> None:
    other = Keypair.create_from_uri("//OtherMiner").ss58_address
    headers, body = signed(receiver_ss58=other)
    both_refuse(headers, body, btauth.WrongReceiver)
    headers, body = signed(receiver_ss58=None)
    both_refuse(headers, body, btauth.WrongReceiver)


def test_stale_and_future_nonces() -> None:
    now = time.time_ns()
    headers, body = signed(nonce_ns=now - 11 * 10**9)
    both_refuse(headers, body, btauth.StaleRequest)
    headers, body = signed(nonce_ns=now + 3 * 10**9)
    both_refuse(headers, body, btauth.StaleRequest)
    # inside the window on both edges
    headers, body = signed(nonce_ns=now - 9 * 10**9)
    our_verify(headers, body)
    headers, body = signed(nonce_ns=now + 1 * 10**9)
    our_verify(headers, body)


@pytest.mark.parametrize(
    "header",
    [btauth.HEADER_VERSION, btauth.HEADER_HOTKEY, btauth.HEADER_NONCE, btauth.HEADER_SIGNATURE],
)
def test_missing_headers(header: str) -> None:
    headers, body = signed()
    del headers[header]
    both_refuse(headers, body, btauth.MalformedAuth)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (btauth.HEADER_VERSION, "2"),
        (btauth.HEADER_NONCE, "12abc"),
        (btauth.HEADER_SIGNATURE, "0xnothex"),
        (btauth.HEADER_SIGNATURE, "0x" + "00" * 10),
        (btauth.HEADER_CRYPTO, "ecdsa"),
        (btauth.HEADER_HOTKEY, "not-an-ss58"),
    ],
)
def test_malformed_headers(header: str, value: str) -> None:
    headers, body = signed()
    headers[header] = value
    both_refuse(headers, body, btauth.MalformedAuth)


def test_header_names_are_case_insensitive() -> None:
    headers, body = signed()
    assert our_verify({k.lower(): v for k, v in headers.items()}, body)
    assert our_verify({k.upper(): v for k, v in headers.items()}, body)


def test_replay_is_refused_and_nonce_only_stored_after_signature() -> None:
    store = MemoryStore()
    headers, body = signed()
    forged = dict(headers, **{btauth.HEADER_SIGNATURE: "0x" + "11" * 64})
    with pytest.raises(btauth.BadSignature):
        our_verify(forged, body, nonce_store=store)
    assert store.seen == set()  # a forger cannot burn a legitimate nonce
    our_verify(headers, body, nonce_store=store)
    with pytest.raises(btauth.ReplayedRequest):
        our_verify(headers, body, nonce_store=store)


# -- the shared Redis store, used by both verifiers ----------------------------------------------------


async def test_redis_nonce_store_refuses_replays_and_expires(redis, keys) -> None:
    store = RedisNonceStore(redis, keys)
    assert store.retention >= btauth.DEFAULT_MAX_AGE + btauth.DEFAULT_ALLOWED_SKEW
    hotkey, nonce = ours("sr25519").ss58_address, time.time_ns()
    assert await store.check_and_store(hotkey, nonce) is True
    assert await store.check_and_store(hotkey, nonce) is False
    assert await store.check_and_store(hotkey, nonce + 1) is True
    ttl_ms = await redis.pttl(keys.nonce(hotkey, nonce))
    assert 0 < ttl_ms <= store.retention * 1000


def test_nonce_store_retention_must_cover_the_window(redis, keys) -> None:
    with pytest.raises(ValueError, match="freshness window"):
        RedisNonceStore(redis, keys, max_age=10, allowed_skew=2, retention=5)


async def test_bittensor_verify_and_ours_share_one_redis_store(redis, redis_url, keys) -> None:
    """bittensor's verifier with our sync store, then ours with the async store: the replay is caught."""
    client = connect_sync(redis_url)
    try:
        sync_store = SyncRedisNonceStore(client, keys)
        headers, body = signed()
        bt_auth.verify(headers, body, method="POST", path="/tasks/arithmetic", self_hotkey_ss58=RECEIVER,
                       nonce_store=sync_store)
        with pytest.raises(btauth.ReplayedRequest):
            await btauth.verify_async(headers, body, method="POST", path="/tasks/arithmetic",
                                      self_hotkey_ss58=RECEIVER, nonce_store=RedisNonceStore(redis, keys))
        with pytest.raises(bt_auth.ReplayedRequest):
            bt_auth.verify(headers, body, method="POST", path="/tasks/arithmetic", self_hotkey_ss58=RECEIVER,
                           nonce_store=sync_store)
    finally:
        client.close()
