"""Random tokens, their hashes, and sealing of the few secrets that must be recoverable.

Tokens are 256-bit random values; the database keeps their SHA-256 (a slow hash adds nothing for
random tokens of this length). Short secrets get a keyed digest (``keyed_digest``) instead.
Sealing is AES-256-GCM with a key derived per purpose from the configured secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hashes_match(expected_hash: str, token: str) -> bool:
    return hmac.compare_digest(expected_hash, token_hash(token))


def keyed_digest(secret: str, purpose: str, *parts: object) -> str:
    """HMAC-SHA256 (hex) of ``parts`` under the configured secret, for short secrets a plain hash
    would not protect (SMS codes, backup codes, PINs): without the key a stolen table reveals nothing.
    ``purpose`` keeps one kind of digest from standing in for another."""
    message = ":".join([purpose, *map(str, parts)]).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@lru_cache(maxsize=16)
def _aead(secret: str, purpose: str) -> AESGCM:
    # One key per purpose, derived from the configured secret.
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret.encode())
    return AESGCM(key)


def seal(secret: str, purpose: str, data: bytes) -> bytes:
    """Authenticated encryption (AES-256-GCM, random 96-bit nonce): nonce + ciphertext."""
    nonce = os.urandom(12)
    return nonce + _aead(secret, purpose).encrypt(nonce, data, purpose.encode())


def unseal(secret: str, purpose: str, sealed: bytes) -> bytes:
    """The data back; raises ``cryptography.exceptions.InvalidTag`` if it was altered."""
    return _aead(secret, purpose).decrypt(sealed[:12], sealed[12:], purpose.encode())


def seal_text(secret: str, purpose: str, text: str) -> str:
    return base64.urlsafe_b64encode(seal(secret, purpose, text.encode())).decode()


def unseal_text(secret: str, purpose: str, sealed: str) -> str:
    return unseal(secret, purpose, base64.urlsafe_b64decode(sealed)).decode()
