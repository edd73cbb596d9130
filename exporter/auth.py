"""HTTP basic auth against the web config's bcrypt hashes: cached, decoyed and bounded.

bcrypt is slow on purpose, which makes three things matter on a small host: a verified
password is remembered (or every scrape would burn ~0.1 s of the CPU the probes measure), an
unknown user costs as much as a known one (or timing tells which names exist), and at most a
few checks run at once (or a flood of wrong passwords takes every core).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import threading
from collections.abc import Iterator, Mapping

import bcrypt

# Concurrent bcrypt checks at most, and how many more may wait for one (briefly) before a
# 503: a flood of wrong passwords then costs at most this many cores, and a real first login
# waits behind a handful of checks, not behind the whole flood.
BCRYPT_CONCURRENCY = 2
BCRYPT_WAITERS = 8
BCRYPT_WAIT_SECONDS = 5.0


class AuthBusy(Exception):
    """Too many bcrypt checks are running or waiting; the request gets a 503."""


class BasicAuth:
    """HTTP Basic auth against bcrypt hashes, remembering passwords already verified.

    bcrypt at cost 10 takes ~0.1 s of CPU; without the cache every scrape would pay it, and on
    a 2-core host that would skew the very parallelism figures this exporter measures.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        # user -> digest of the last (user, password, hash) that bcrypt accepted.
        self._verified: dict[str, bytes] = {}
        # An unknown user is checked against this decoy so the answer takes as long as for a
        # real user with a wrong password (exporter-toolkit does the same). Its cost is the
        # highest configured one: with a fixed cost, a user whose hash costs more would
        # answer slower than a missing user, revealing which names exist.
        self.decoy_hash = _decoy_hash(max(bcrypt_cost(h) for h in self._users.values()))
        self._slots = threading.BoundedSemaphore(BCRYPT_CONCURRENCY)
        self._waiting = 0
        self._waiting_lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        """True for valid credentials; raises AuthBusy when bcrypt is saturated."""
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        digest = _digest(user, password, hashed or self.decoy_hash)
        cached = self._verified.get(user)
        # Constant-time comparison: the cached digest derives from the real password.
        if hashed is not None and cached is not None and hmac.compare_digest(cached, digest):
            return True
        with self._bcrypt_slot():
            try:
                ok = bcrypt.checkpw(password, hashed or self.decoy_hash)
            except ValueError:  # e.g. passwords over bcrypt's 72-byte limit
                ok = False
        if ok and hashed is not None:
            self._verified[user] = digest
            return True
        return False

    @contextlib.contextmanager
    def _bcrypt_slot(self) -> Iterator[None]:
        """One of BCRYPT_CONCURRENCY slots; a short, bounded wait, then AuthBusy."""
        if not self._slots.acquire(blocking=False):
            with self._waiting_lock:
                if self._waiting >= BCRYPT_WAITERS:
                    raise AuthBusy
                self._waiting += 1
            try:
                acquired = self._slots.acquire(timeout=BCRYPT_WAIT_SECONDS)
            finally:
                with self._waiting_lock:
                    self._waiting -= 1
            if not acquired:
                raise AuthBusy
        try:
            yield
        finally:
            self._slots.release()


def bcrypt_cost(hashed: bytes) -> int:
    """The cost (log2 rounds) of a ``$2b$NN$...`` hash (webconfig has checked the form)."""
    return int(hashed.split(b"$")[2])


def _decoy_hash(cost: int) -> bytes:
    """A bcrypt hash of a random password nobody has, at ``cost``; made once per config."""
    return bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _digest(user: str, password: bytes, hashed: bytes) -> bytes:
    h = hashlib.sha256()
    for part in (user.encode("utf-8"), password, hashed):
        # Length prefixes keep ("ab", "c") and ("a", "bc") from hashing alike.
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()
