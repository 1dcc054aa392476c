"""Wallet files in the standard bittensor layout, read and written by ``bittensor_wallet`` itself.

Layout under the wallets root (``~/.bittensor/wallets`` by default)::

    NAME/coldkey             keypair JSON (encrypted for real coldkeys; plain JSON for development keys)
    NAME/coldkeypub.txt      public JSON of the coldkey (``ss58Address``, ``publicKey``, ...)
    NAME/hotkeys/HOTKEY      keypair JSON with ``secretSeed``, ``publicKey``, ``accountId``, ``ss58Address``
    NAME/hotkeys/HOTKEYpub.txt

Reading and writing go through ``bittensor_wallet.Keyfile``/``Wallet`` so the files stay exactly what the
rest of the ecosystem (btcli, the SDK) writes and reads. This module adds what a long-running service needs
on top: errors that name the missing file instead of a generic Rust error, and a refusal to overwrite any
existing key file.

Password-protected (encrypted) hotkeys are unlocked with the password the wallet library reads from its
own environment variable (``BT_PW_`` + the key file's path, see :func:`password_variable`; its value is what
``Keyfile.save_password_to_env`` returns, which ``inference-subnet wallet password-env`` prints), or with
one the caller asks for (a terminal prompt). Never with the library's own prompt: it reads the terminal
even when stdin is not one, so a supervised service would hang instead of failing.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bittensor_wallet import Keyfile, Keypair, Wallet

if TYPE_CHECKING:
    from inference_subnet.settings import Settings

CRYPTO_TYPES: dict[str, int] = {"sr25519": 1, "ed25519": 0}

AskPassword = Callable[[str], "str | None"]
"""Asks for the password of the key file it is given (a prompt); ``None`` when nobody can answer."""

log = logging.getLogger(__name__)
_unlocked: dict[str, Keypair] = {}
"""Encrypted key files this process has unlocked: one slow key derivation (seconds, ~0.5 GiB) a process."""


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


def password_variable(path: Path | str) -> str:
    """The environment variable the wallet library reads the password of the key file at ``path`` from."""
    return str(Keyfile(str(path)).env_var_name())


def _read_keyfile(path: Path, what: str, ask_password: AskPassword | None = None) -> Keypair:
    """A keypair from one key file; an encrypted one is unlocked as the module docstring says."""
    if not _probe(path):
        raise WalletError(
            f"{what} file not found: {path} "
            "(create development keys with `inference-subnet wallet create --wallet.name NAME "
            "--wallet.hotkey HOTKEY`)"
        )
    if not os.access(path, os.R_OK):
        raise _denied(path)
    try:
        keyfile = Keyfile(str(path))
        if keyfile.is_encrypted():
            return _unlock(keyfile, path, what, ask_password)
        return keyfile.keypair
    except WalletError:
        raise
    except Exception as exc:  # noqa: BLE001  (bittensor_wallet's KeyFileError is not importable by name)
        raise WalletError(f"cannot read {what} file {path}: {_first_line(exc)}") from None


def _unlock(keyfile: Keyfile, path: Path, what: str, ask_password: AskPassword | None) -> Keypair:
    key = str(path.resolve())
    if key in _unlocked:
        return _unlocked[key]
    variable = str(keyfile.env_var_name())
    password = None
    if variable not in os.environ:
        password = ask_password(str(path)) if ask_password is not None else None
        if password is None:
            raise WalletError(
                f"{what} file {path} is encrypted: set {variable} (`inference-subnet wallet password-env` "
                "prints it) or start on a terminal to be asked for the password"
            )
    source = f"the password in {variable}" if password is None else "the password given"
    log.info("unlocking %s file %s (the key derivation takes a few seconds)", what, path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the library prints "Decrypting..." on stdout
            keypair = keyfile.get_keypair(password=password)
    except Exception as exc:  # noqa: BLE001  (KeyFileError is not importable by name)
        raise WalletError(f"cannot unlock {what} file {path} with {source}: {_first_line(exc)}") from None
    if password is not None:
        # Worker processes started after this one (a miner's --workers) unlock it the library's way.
        os.environ[variable] = str(keyfile.save_password_to_env(password))
    _unlocked[key] = keypair
    return keypair


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_hotkey(
    wallet_path: Path, name: str, hotkey: str, *, ask_password: AskPassword | None = None
) -> Keypair:
    """The hotkey keypair (with its secret) that signs requests and answers as a miner."""
    return _read_keyfile(hotkey_file(wallet_path, name, hotkey), "hotkey", ask_password)


def load_hotkey_public(wallet_path: Path, name: str, hotkey: str) -> tuple[Keypair, bool]:
    """The hotkey's public half and whether its key file is encrypted, without unlocking anything.

    ``HOTKEYpub.txt`` (written beside every hotkey by btcli and the library) holds the public key; a
    plain key file without it (very old wallets) is read instead. An encrypted one without it is an error,
    as the address cannot be known without the password."""
    path = hotkey_file(wallet_path, name, hotkey)
    if not _probe(path):
        raise WalletError(f"hotkey file not found: {path}")
    try:
        encrypted = bool(Keyfile(str(path)).is_encrypted())
    except Exception as exc:  # noqa: BLE001  (the binding's errors are not importable by name)
        raise WalletError(f"cannot read hotkey file {path}: {_first_line(exc)}") from None
    pub = path.with_name(path.name + "pub.txt")
    if _probe(pub):
        return _read_keyfile(pub, "hotkeypub"), encrypted
    if encrypted:
        raise WalletError(f"hotkey file {path} is encrypted and {pub} is missing: its address is unknown")
    return _read_keyfile(path, "hotkey"), False


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


def keypair_from_settings(settings: Settings, *, ask_password: AskPassword | None = None) -> Keypair:
    """The hotkey named by ``settings.wallet``."""
    w = settings.wallet
    return load_hotkey(w.path, w.name, w.hotkey, ask_password=ask_password)
