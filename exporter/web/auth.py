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
        # An unknown user is checked against a decoy so the answer takes as long as for a real
        # user with a wrong password (exporter-toolkit does the same). With users at several
        # costs one decoy cost would tell names apart (an unknown name at cost 12 answers in
        # 0.28 s, a cost-10 user in 0.07 s), so each name gets the cost of a configured
        # user, drawn by a keyed hash: always the same for one name, at random across names.
        self._decoy_costs = sorted(bcrypt_cost(h) for h in self._users.values())
        self._decoys = {cost: _decoy_hash(cost) for cost in self._decoy_costs}
        self._decoy_key = os.urandom(16)
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
        digest = _digest(user, password, hashed or self.decoy_hash(user))
        cached = self._verified.get(user)
        # Constant-time comparison: the cached digest derives from the real password.
        if hashed is not None and cached is not None and hmac.compare_digest(cached, digest):
            return True
        with self._bcrypt_slot():
            try:
                ok = bcrypt.checkpw(password, hashed or self.decoy_hash(user))
            except ValueError:  # e.g. passwords over bcrypt's 72-byte limit
                ok = False
        if ok and hashed is not None:
            self._verified[user] = digest
            return True
        return False

    def decoy_hash(self, user: str) -> bytes:
        """The decoy an unknown ``user`` is checked against, at a configured user's cost."""
        draw = hmac.new(self._decoy_key, user.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        return self._decoys[self._decoy_costs[int.from_bytes(draw[:8], "big") % len(self._decoy_costs)]]

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


_BCRYPT_ALPHABET = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _decoy_hash(cost: int) -> bytes:
    """A bcrypt hash at ``cost`` that no password matches, made without hashing.

    ``checkpw`` spends the cost's time on the salt alone and then compares; random hash
    characters make a match as unlikely as guessing a real hash, and start-up (or a reload)
    never waits seconds for a decoy at a high cost.
    """
    return bcrypt.gensalt(cost) + bytes(_BCRYPT_ALPHABET[b % 64] for b in os.urandom(31))


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
