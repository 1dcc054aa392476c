"""Wallet files in the standard bittensor layout, read and written by ``bittensor_wallet`` itself.

Layout under the wallets root (``~/.bittensor/wallets`` by default)::

    NAME/coldkey             keypair JSON (encrypted for real coldkeys; plain JSON for development keys)
    NAME/coldkeypub.txt      public JSON of the coldkey (``ss58Address``, ``publicKey``, ...)
    NAME/hotkeys/HOTKEY      keypair JSON with ``secretSeed``, ``publicKey``, ``accountId``, ``ss58Address``
    NAME/hotkeys/HOTKEYpub.txt

Reading and writing go through ``bittensor_wallet.Keyfile``/``Wallet`` so the files stay exactly what the
rest of the ecosystem (btcli, the SDK) writes and reads. This module adds what a long-running service needs
on top: errors that name the missing file instead of a generic Rust error, no interactive password prompt
(a service must fail, not hang on stdin), and a refusal to overwrite any existing key file.
"""

from __future__ import annotations

import json
import os
import stat
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from bittensor_wallet import Keyfile, Keypair, Wallet

if TYPE_CHECKING:
    from inference_subnet.settings import Settings

CRYPTO_TYPES: dict[str, int] = {"sr25519": 1, "ed25519": 0}


class WalletError(Exception):
    """A wallet file is missing, unreadable, encrypted where a service needs it plain, or would be overwritten."""


def check_name(name: str, what: str = "wallet") -> str:
    """``name`` when it is a plain file name; :class:`WalletError` otherwise.

    Wallet and hotkey names become path parts under the wallets root: a separator or ``..`` would read or
    write key files elsewhere (``--name ../escape``), and a control character would hide in listings."""
    if not name or name in (".", ".."):
        raise WalletError(f"{what} name {name!r} is not a plain name")
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        raise WalletError(f"{what} name {name!r} must not contain a path separator")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        raise WalletError(f"{what} name {name!r} must not contain control characters")
    return name


def wallet_dir(wallet_path: Path | str, name: str) -> Path:
    return Path(wallet_path).expanduser() / check_name(name, "wallet")


def hotkey_file(wallet_path: Path | str, name: str, hotkey: str) -> Path:
    return wallet_dir(wallet_path, name) / "hotkeys" / check_name(hotkey, "hotkey")


def coldkey_file(wallet_path: Path | str, name: str) -> Path:
    return wallet_dir(wallet_path, name) / "coldkey"


def coldkeypub_file(wallet_path: Path | str, name: str) -> Path:
    return wallet_dir(wallet_path, name) / "coldkeypub.txt"


def _probe(path: Path, kind: str = "file") -> bool:
    """Whether ``path`` is a file (``kind="file"``) or exists at all; a folder this process may not search
    is a :class:`WalletError` naming the path, not a ``PermissionError`` traceback."""
    try:
        return path.is_file() if kind == "file" else path.exists()
    except PermissionError:
        raise _denied(path) from None
    except OSError as exc:
        raise WalletError(f"cannot read {path}: {exc.strerror or exc}") from None


def _denied(path: Path) -> WalletError:
    """Why this process may not read ``path``: the first folder it may not enter (or the file itself), its
    owner and mode, and this process's uid. In a container the usual cause is a uid that does not own the
    mounted 0600 key files, and the fix is to run as their owner, so the message names both uids."""
    blocker = next(
        (p for p in (*reversed(path.parents), path) if not os.access(p, os.R_OK if p == path else os.X_OK)),
        path,
    )
    try:
        st = blocker.stat()
        owner = f" (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"
    except OSError:
        owner = ""
    return WalletError(
        f"cannot read {path}: permission denied on {blocker}{owner} for uid {os.getuid()}; "
        "run as the owner of the key files or give this uid read access"
    )


def _read_keyfile(path: Path, what: str) -> Keypair:
    """A keypair from one key file, never prompting: encrypted files are an error for a service."""
    if not _probe(path):
        raise WalletError(
            f"{what} file not found: {path} "
            "(create development keys with `inference-subnet wallet create --name NAME --hotkey HOTKEY`)"
        )
    if not os.access(path, os.R_OK):
        raise _denied(path)
    try:
        keyfile = Keyfile(str(path))
        if keyfile.is_encrypted():
            raise WalletError(f"{what} file is encrypted: {path}; a service needs an unencrypted key file")
        return keyfile.keypair
    except WalletError:
        raise
    except Exception as exc:  # noqa: BLE001  (bittensor_wallet's KeyFileError is not importable by name)
        raise WalletError(f"cannot read {what} file {path}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_hotkey(wallet_path: Path, name: str, hotkey: str) -> Keypair:
    """The hotkey keypair (with its secret) that signs requests and answers as a miner."""
    return _read_keyfile(hotkey_file(wallet_path, name, hotkey), "hotkey")


def load_coldkeypub(wallet_path: Path, name: str) -> str:
    """The coldkey's ss58 address from ``coldkeypub.txt``.

    Current files are JSON; very old ones hold the bare ss58 string, which is still accepted.
    """
    path = coldkeypub_file(wallet_path, name)
    if not _probe(path):
        raise WalletError(f"coldkeypub file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except PermissionError:
        raise _denied(path) from None
    except OSError as exc:
        raise WalletError(f"cannot read coldkeypub file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise WalletError(f"coldkeypub file {path} is not UTF-8 text") from None
    if not text.startswith("{"):
        try:
            return Keypair(ss58_address=text).ss58_address
        except Exception:  # noqa: BLE001  (the binding raises a bare ValueError or its own type)
            raise WalletError(f"coldkeypub file {path} holds neither JSON nor an ss58 address") from None
    try:
        data = json.loads(text)
        return Keypair(ss58_address=data["ss58Address"]).ss58_address
    except (ValueError, KeyError, TypeError):
        pass
    return _read_keyfile(path, "coldkeypub").ss58_address


def create_wallet(
    wallet_path: Path,
    name: str,
    hotkey: str,
    *,
    overwrite: bool = False,
    crypto_type: int = 1,
    coldkey_uri: str | None = None,
    hotkey_uri: str | None = None,
) -> tuple[Keypair, Keypair]:
    """Development keys: ``(coldkey, hotkey)``, written unencrypted with mode 0600.

    An existing coldkey is reused (so a second hotkey can join a wallet) and never rewritten unless
    ``overwrite``; an existing hotkey file is an error unless ``overwrite``. ``*_uri`` (e.g. ``//Alice``)
    derive well-known keys for local chains instead of fresh random mnemonics.
    """
    hot_path = hotkey_file(wallet_path, name, hotkey)
    cold_path = coldkey_file(wallet_path, name)
    if _probe(hot_path, "any") and not overwrite:
        raise WalletError(f"hotkey file already exists: {hot_path}; refusing to overwrite it")
    wallet = Wallet(name=name, hotkey=hotkey, path=str(Path(wallet_path).expanduser()))
    old_umask = os.umask(0o077)
    try:
        if overwrite or not _probe(cold_path, "any"):
            if coldkey_uri:
                wallet.create_coldkey_from_uri(
                    coldkey_uri, use_password=False, overwrite=True, suppress=True, crypto_type=crypto_type
                )
            else:
                wallet.create_new_coldkey(
                    use_password=False, overwrite=True, suppress=True, crypto_type=crypto_type
                )
        if hotkey_uri:
            wallet.create_hotkey_from_uri(
                hotkey_uri, use_password=False, overwrite=True, suppress=True, crypto_type=crypto_type
            )
        else:
            wallet.create_new_hotkey(use_password=False, overwrite=True, suppress=True, crypto_type=crypto_type)
    except Exception as exc:  # noqa: BLE001  (any failure of the binding becomes one clear error)
        raise WalletError(f"cannot write wallet {name!r} under {wallet_path}: {_first_line(exc)}") from None
    finally:
        os.umask(old_umask)
    _restrict(wallet_dir(wallet_path, name))
    coldkey = _coldkey_or_pub(wallet_path, name)
    return coldkey, load_hotkey(wallet_path, name, hotkey)


def _coldkey_or_pub(wallet_path: Path, name: str) -> Keypair:
    """The coldkey with its secret when stored plain, else its public half (a reused, encrypted coldkey)."""
    path = coldkey_file(wallet_path, name)
    try:
        plain = _probe(path) and not Keyfile(str(path)).is_encrypted()
    except WalletError:
        raise
    except Exception as exc:  # noqa: BLE001  (the binding's errors are not importable by name)
        raise WalletError(f"cannot read coldkey file {path}: {_first_line(exc)}") from None
    if plain:
        return _read_keyfile(path, "coldkey")
    return Keypair(ss58_address=load_coldkeypub(wallet_path, name))


def _restrict(folder: Path) -> None:
    """Key files 0600 and their folders 0700, whatever the library or umask did."""
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o700)
        for file in files:
            os.chmod(Path(root) / file, 0o600)


def keypair_from_settings(settings: Settings) -> Keypair:
    """The hotkey named by ``settings.wallet``."""
    w = settings.wallet
    return load_hotkey(w.path, w.name, w.hotkey)
