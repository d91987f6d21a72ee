"""Secrets at rest: Fernet with every key in FIELD_ENCRYPTION_KEY (the first encrypts, all decrypt)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError:
        # Accept any passphrase: derive a 32-byte key from it.
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def _cipher() -> MultiFernet:
    return MultiFernet([_fernet(k) for k in settings.FIELD_ENCRYPTION_KEY])


def encrypt_json(value: Any) -> str:
    return _cipher().encrypt(json.dumps(value).encode()).decode()


def decrypt_json(token: str) -> Any:
    if not token:
        return None
    try:
        return json.loads(_cipher().decrypt(token.encode()))
    except InvalidToken as exc:
        raise ValueError("stored secret cannot be decrypted with any FIELD_ENCRYPTION_KEY") from exc
