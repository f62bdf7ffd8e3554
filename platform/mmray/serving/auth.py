"""API keys: kept only as SHA-256 hashes, compared in constant time, never logged."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from mmray.config.serving import AuthSettings
from mmray.errors import ConfigError

HASH_PREFIX = "sha256:"


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key and the line to put in a keys file."""
    key = "mmr_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


def env_key_hashes(variable: str) -> list[str]:
    """Hashes of the comma-separated keys in the environment variable (none when it is unset)."""
    return [hash_key(k.strip()) for k in os.environ.get(variable, "").split(",") if k.strip()]


def read_key_hashes(settings: AuthSettings, admin: bool = False) -> list[str]:
    """Hashes of the query (or `admin`) keys in the settings, their environment variable and keys file."""
    prefix = "admin_" if admin else ""
    hashes = [*getattr(settings, f"{prefix}key_hashes"), *env_key_hashes(getattr(settings, f"{prefix}keys_env"))]
    keys_file, setting = getattr(settings, f"{prefix}keys_file"), f"auth.{prefix}keys_file"
    if keys_file:
        path = Path(keys_file)
        if not path.is_file():
            raise ConfigError(f"{setting}: {path} does not exist")
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not re.fullmatch(HASH_PREFIX + "[0-9a-f]{64}", line):
                raise ConfigError(f"{setting}: {path} line {number} is not 'sha256:<64 hex digits>'")
            hashes.append(line)
    return hashes


class KeyChecker:
    """Whether a request's `Authorization` header carries one of the keys; open when there are none."""

    def __init__(self, hashes: list[str]) -> None:
        self.hashes = [h.encode() for h in hashes]

    @property
    def enabled(self) -> bool:
        return bool(self.hashes)

    def allows(self, authorization: str | None) -> bool:
        if not self.enabled:
            return True
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        presented = hash_key(key.strip()).encode()
        return any(hmac.compare_digest(presented, known) for known in self.hashes)


class Access:
    """Which key a request carries: none needed (no keys set), a query key, an admin key, or none valid."""

    def __init__(self, query_hashes: list[str], admin_hashes: list[str]) -> None:
        self.query, self.admin = KeyChecker(query_hashes), KeyChecker(admin_hashes)

    @property
    def enabled(self) -> bool:
        """Whether queries need a key: query keys are set (admin keys alone guard only the admin routes)."""
        return self.query.enabled

    def may_query(self, authorization: str | None) -> bool:
        return self.query.allows(authorization) or self.may_administer(authorization)

    def may_administer(self, authorization: str | None) -> bool:
        return self.admin.enabled and self.admin.allows(authorization)


def under_roots(uri: str, roots: list[str]) -> bool:
    """Whether `uri` (a local path or s3:// URI) lies at or below one of `roots` (symbolic links resolved)."""
    if uri.startswith("s3://"):
        return any(root.startswith("s3://") and (uri.rstrip("/") + "/").startswith(root.rstrip("/") + "/")
                   for root in roots)  # fmt: skip
    path = os.path.realpath(uri)
    return any(
        not root.startswith("s3://") and (path + os.sep).startswith(os.path.realpath(root).rstrip(os.sep) + os.sep)
        for root in roots
    )
