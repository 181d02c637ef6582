"""The login throttle, kept in the ``logins`` index so every admin process (and a restart) sees the same
counts.

A key (an account at one client address, or one client address over all names) may fail ``limit`` times
within a minute; the next failure blocks it for a minute, and each further block of the same key doubles
that (back-off), up to an hour. A key that stays clean for an hour starts again from one minute. A
success clears the account's key. Each failure is one scripted update on OpenSearch, so processes
failing at once add up instead of overwriting each other.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smarttags.core.ports import Index

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
MAX_BLOCK_SECONDS = 3600.0

# Counts failures within the window; at the limit, blocks the key for window * 2^(strikes - 1).
_FAILED = (
    "def s = ctx._source;"
    " if (s.last_failure == null || params.now - s.last_failure > params.max_block) { s.strikes = 0; }"
    " if (s.window_start == null || params.now - s.window_start > params.window) {"
    " s.window_start = params.now; s.failures = 0; }"
    " s.failures = s.failures + 1; s.last_failure = params.now;"
    " if (s.failures >= params.limit) {"
    " s.strikes = s.strikes + 1;"
    " s.blocked_until = params.now + Math.min(params.max_block, params.window * Math.pow(2, s.strikes - 1));"
    " s.failures = 0; s.window_start = params.now; }"
)


@dataclass(frozen=True)
class Attempt:
    """The keys one login attempt counts against: the account at this client, and the client."""

    account: str
    client: str

    @classmethod
    def of(cls, username: str, address: str) -> Attempt:
        client = f"ip:{address}"
        return cls(f"user:{username.lower()}|{client}", client)


def _doc_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()  # keys hold arbitrary names: ids of fixed shape


class LoginThrottle:
    def __init__(self, index: Index, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self._index = index
        self.per_minute = per_minute
        self._clock = clock  # wall time: processes on several hosts must agree

    def _limits(self, attempt: Attempt) -> Sequence[tuple[str, int]]:
        # A client gets four times an account's tries over all names, so trying a few names is no
        # block, and an attacker at another address cannot lock a user out.
        return ((attempt.account, self.per_minute), (attempt.client, 4 * self.per_minute))

    def blocked_for(self, attempt: Attempt) -> float:
        """Seconds until this attempt may be made (0 when it may be made now)."""
        now = self._clock()
        keys = [key for key, _ in self._limits(attempt)]
        docs = self._index.mget("logins", [_doc_id(key) for key in keys])
        until = max((float(doc.get("blocked_until") or 0.0) for doc in docs if doc), default=0.0)
        return max(0.0, until - now)

    def failed(self, attempt: Attempt) -> None:
        now = self._clock()
        for key, limit in self._limits(attempt):
            self._index.update_scripted(
                "logins",
                _doc_id(key),
                _FAILED,
                {"now": now, "limit": limit, "window": WINDOW_SECONDS, "max_block": MAX_BLOCK_SECONDS},
                upsert={"key": key, "failures": 0, "strikes": 0},
                refresh="true",  # the next attempt, in any process, must see this one
            )

    def succeeded(self, attempt: Attempt) -> None:
        doc_id = _doc_id(attempt.account)
        if self._index.mget("logins", [doc_id])[0] is not None:  # mget: no 404 logged for a clean account
            self._index.delete("logins", doc_id, refresh=True)
