"""Random tokens, their hashes, and sealing of the few secrets that must be recoverable.

Tokens are 256-bit random values; the database keeps their SHA-256 (a slow hash adds nothing for
random tokens of this length). Sealing uses Fernet with a key derived from the configured secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hashes_match(expected_hash: str, token: str) -> bool:
    return hmac.compare_digest(expected_hash, token_hash(token))


@lru_cache(maxsize=16)
def _fernet(secret: str, purpose: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(secret: str, purpose: str, data: bytes) -> bytes:
    return _fernet(secret, purpose).encrypt(data)


def unseal(secret: str, purpose: str, data: bytes) -> bytes:
    return _fernet(secret, purpose).decrypt(data)
