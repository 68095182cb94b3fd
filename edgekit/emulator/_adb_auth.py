"""ADB's public-key authentication, device side, for the emulated phone.

A real phone refuses every service until the host proves it holds a key the phone trusts: it answers
the host's CNXN with ``AUTH TOKEN`` (20 random bytes), the stock client signs the token with its RSA key
(``~/.android/adbkey``: PKCS#1 v1.5 over the token taken as a SHA-1 digest) and sends ``AUTH SIGNATURE``;
a signature from a trusted key completes the handshake, anything else gets a fresh token. Out of keys,
the client sends ``AUTH RSAPUBLICKEY`` with its public key, which a phone only accepts when its user
says so (here: ``accept_new_keys``, and the key is then kept).

Trusted keys are the lines of the phone's ``adb_keys`` file (the format of ``adbkey.pub``: base64 of
Android's ``RSAPublicKey`` struct, then an optional comment) and the public key of the user running the
phone, where the stock client keeps it, so only that user's adb server gets in. The key files are read
at each handshake: an adb server started after the phone (which creates its key then) is trusted too.
This module does no I/O on the network and never runs anything.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import secrets
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

log = logging.getLogger(__name__)

ADB_AUTH_TOKEN = 1
ADB_AUTH_SIGNATURE = 2
ADB_AUTH_RSAPUBLICKEY = 3
TOKEN_BYTES = 20
# Android's RSAPublicKey: modulus size in words, n0inv, modulus (LE), R^2 mod n (LE), exponent.
_MODULUS_BYTES = 256
_PUBKEY = struct.Struct(f"<II{_MODULUS_BYTES}s{_MODULUS_BYTES}sI")
_MAX_KEY_FILE_BYTES = 1024 * 1024  # an adb_keys file of ~1400 keys; a longer one is not read


def new_token() -> bytes:
    return secrets.token_bytes(TOKEN_BYTES)


def decode_public_key(text: bytes | str) -> rsa.RSAPublicKey | None:
    """The key in one ``adbkey.pub`` line (base64, optional comment, optional NUL); None if malformed."""
    raw_text = text.encode() if isinstance(text, str) else text
    fields = raw_text.rstrip(b"\0").split()
    if not fields:
        return None
    try:
        raw = base64.b64decode(fields[0], validate=True)
        words, _, modulus, _, exponent = _PUBKEY.unpack(raw)
    except (binascii.Error, struct.error, ValueError):
        return None
    if words != _MODULUS_BYTES // 4:
        return None
    n = int.from_bytes(modulus, "little")
    try:
        return rsa.RSAPublicNumbers(exponent, n).public_key()
    except ValueError:
        return None


def encode_public_key(key: rsa.RSAPublicKey, comment: str = "") -> str:
    """``adbkey.pub`` text for a 2048-bit RSA key (what the stock client writes and sends)."""
    numbers = key.public_numbers()
    n = numbers.n
    if n.bit_length() > _MODULUS_BYTES * 8:
        raise ValueError("adb keys are 2048-bit RSA keys")
    n0inv = (-pow(n, -1, 1 << 32)) & 0xFFFFFFFF
    rr = pow(2, 2 * _MODULUS_BYTES * 8, n)
    raw = _PUBKEY.pack(_MODULUS_BYTES // 4, n0inv, n.to_bytes(_MODULUS_BYTES, "little"),
                       rr.to_bytes(_MODULUS_BYTES, "little"), numbers.e)
    return base64.b64encode(raw).decode() + (f" {comment}" if comment else "")


def sign_token(key: rsa.RSAPrivateKey, token: bytes) -> bytes:
    """The stock client's signature of a token (tests use it to play a host)."""
    return key.sign(token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))


def user_key_dir() -> Path:
    """Where the stock client keeps the running user's key: ``$HOME/.android``."""
    return Path.home() / ".android"


class Authorizer:
    """Decides whether a host may use the phone: checks token signatures against the trusted keys."""

    def __init__(self, keys_file: Path, *, user_keys: Iterable[Path] = (), accept_new_keys: bool = False) -> None:
        self.keys_file = keys_file
        self.user_keys = list(user_keys)
        self.accept_new_keys = accept_new_keys
        self._lock = threading.Lock()

    def trusted_keys(self) -> list[rsa.RSAPublicKey]:
        keys: list[rsa.RSAPublicKey] = []
        for path in [self.keys_file, *self.user_keys]:
            for line in _read_lines(path):
                key = decode_public_key(line)
                if key is not None:
                    keys.append(key)
            if path.suffix == ".pub" and not path.exists():  # an older client wrote only the private key
                key = _public_from_private(path.with_suffix(""))
                if key is not None:
                    keys.append(key)
        return keys

    def verify(self, token: bytes, signature: bytes) -> bool:
        for key in self.trusted_keys():
            with contextlib.suppress(InvalidSignature, ValueError):
                key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
                return True
        return False

    def offer(self, public_key: bytes) -> bool:
        """A host sent its public key: trust it (and keep it in ``adb_keys``) only when configured to."""
        key = decode_public_key(public_key)
        if key is None or not self.accept_new_keys:
            return False
        comment = public_key.rstrip(b"\0").split(maxsplit=1)[1:]
        line = encode_public_key(key, comment[0].decode("utf-8", "replace") if comment else "")
        with self._lock, self.keys_file.open("a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():  # adbkey.pub files end without a newline: never glue a key onto one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line.encode() + b"\n")
        log.warning("trusting a new adb key (accept-new-keys is on)")
        return True


def _read_lines(path: Path) -> list[bytes]:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError:
        return []
    if len(data) > _MAX_KEY_FILE_BYTES:
        log.warning("%s is over %d bytes; not read", path, _MAX_KEY_FILE_BYTES)
        return []
    return data.splitlines()


def _public_from_private(path: Path) -> rsa.RSAPublicKey | None:
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    public = private.public_key()
    return public if isinstance(public, rsa.RSAPublicKey) else None
