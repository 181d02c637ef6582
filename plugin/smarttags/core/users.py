"""Admin users on the users index: a name, a role and a salted scrypt hash of the password.

Hashing uses only :mod:`hashlib` (no Flask, no werkzeug), so the CLI can create users without the admin
extra. The stored form is ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``; verifying reads the parameters
back, so they can be raised later without invalidating existing users.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smarttags.core.clock import now_iso
from smarttags.core.ports import Index, Versioned
from smarttags.errors import ConflictError, NotFound, RequestError

log = logging.getLogger(__name__)

ADMIN = "admin"
MODERATOR = "moderator"
VIEWER = "viewer"
ROLES = (ADMIN, MODERATOR, VIEWER)
# What each role may do includes everything the roles after it may do.
_RANK = {ADMIN: 3, MODERATOR: 2, VIEWER: 1}
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_KEY_BYTES = 32
WRITE_ATTEMPTS = 3
GUARD_ATTEMPTS = 5
# Not a user name (those start with a letter or digit): the document admin-removing changes commit on.
GUARD_ID = "~admins"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_KEY_BYTES)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(expected)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


# Verifying against this when a user does not exist costs the same time as a real check.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise RequestError(f"role must be one of {', '.join(ROLES)}")


def _check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise RequestError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def _removes_admin(source: dict[str, Any], fields: dict[str, Any]) -> bool:
    """Whether writing ``fields`` over ``source`` takes an enabled admin away."""
    after = {**source, **fields}
    was = source.get("role") == ADMIN and not source.get("disabled")
    return was and (after.get("role") != ADMIN or bool(after.get("disabled")))


def _overlay(fields: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda source: {**source, **fields}


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (admin > moderator > viewer)."""
    return _RANK.get(role, 0) >= _RANK[needed]


@dataclass(frozen=True)
class User:
    username: str
    role: str
    created_at: str | None = None
    # Sessions carry the generation they began in; raising it ends every session of the user.
    session_generation: int = 0
    disabled: bool = False


def _user(source: dict[str, object]) -> User:
    return User(
        str(source["username"]),
        str(source["role"]),
        source.get("created_at"),  # type: ignore[arg-type]
        int(source.get("session_generation") or 0),  # type: ignore[call-overload]
        bool(source.get("disabled", False)),
    )


class UserStore:
    def __init__(self, index: Index) -> None:
        self._index = index

    def create(self, username: str, password: str, role: str, *, by: str | None = None) -> User:
        if not USERNAME.match(username):
            raise RequestError("a user name is 1 to 64 letters, digits or _ . @ - and starts with a letter or digit")
        _check_role(role)
        _check_password(password)
        user = User(username, role, now_iso())
        doc = {
            "username": username,
            "password_hash": hash_password(password),
            "role": role,
            "created_at": user.created_at,
        }
        try:
            self._index.put("users", username, doc, create=True, refresh="true")
        except ConflictError:
            raise RequestError(f"user {username!r} already exists") from None
        log.info("created user %s with role %s", username, role)
        if by is not None:
            self._audit(by, "user.create", f"created user {username} with role {role}")
        return user

    def get(self, username: str) -> User | None:
        found = self._index.get("users", username) if USERNAME.match(username) else None
        if found is None:
            return None
        return _user(found.source)

    def verify(self, username: str, password: str) -> User | None:
        """The user if the password is theirs, else None (same cost whether or not the user exists)."""
        found = self._index.get("users", username) if USERNAME.match(username) else None
        if found is None:
            verify_password(password, _DUMMY_HASH)
            return None
        if not verify_password(password, str(found.source.get("password_hash", ""))):
            return None
        user = _user(found.source)
        return None if user.disabled else user

    def list(self) -> list[User]:
        body = {"size": 1000, "query": {"exists": {"field": "username"}}, "sort": [{"username": "asc"}]}
        hits = self._index.search("users", body)["hits"]["hits"]
        return [_user(h["_source"]) for h in hits]

    def end_sessions(self, username: str) -> None:
        """End every session of ``username`` (logout, and whatever changes a user's password or role)."""
        self._change(username, lambda source: source)
        log.info("ended the sessions of user %s", username)

    def set_role(self, username: str, role: str, *, by: str) -> User:
        _check_role(role)
        user = self._admin_change(username, {"role": role})
        self._audit(by, "user.role", f"set the role of {username} to {role}")
        return user

    def set_disabled(self, username: str, disabled: bool, *, by: str) -> User:
        user = self._admin_change(username, {"disabled": disabled})
        self._audit(by, "user.disable" if disabled else "user.enable", f"{'dis' if disabled else 'en'}abled {username}")
        return user

    def _admin_change(self, username: str, fields: dict[str, Any]) -> User:
        """Write a role or disabled change; one that takes an enabled admin away passes the last-admin
        check and then commits on the guard document (``if_seq_no``). Two such changes at once both pass
        their checks, but only one commits: the other undoes its write and checks again, now seeing the
        first. Only these changes commit, so every check counts admins that no undo takes away."""
        for _ in range(GUARD_ATTEMPTS):
            guard = self._guard()

            def change(source: dict[str, Any]) -> dict[str, Any]:
                if _removes_admin(source, fields):
                    self._keep_an_admin(username)
                return {**source, **fields}

            user, previous = self._write(username, change)
            if not _removes_admin(previous, fields):
                return user
            commits = int(guard.source.get("admin_changes") or 0) + 1
            try:
                self._index.put("users", GUARD_ID, {"admin_changes": commits}, expected=guard, refresh="true")
                return user
            except ConflictError:
                # Another admin was taken away meanwhile: undo ours (only the fields we changed) and retry.
                undo = {name: previous.get(name, False if name == "disabled" else None) for name in fields}
                self._write(username, _overlay(undo))
                log.info("user %s: a concurrent admin change; checking again", username)
        raise ConflictError("opensearch", f"admins changed repeatedly; {username!r} is unchanged, retry")

    def _guard(self) -> Versioned:
        """The one document every change taking an admin away commits on (created on first use)."""
        for _ in range(3):
            found = self._index.get("users", GUARD_ID)
            if found is not None:
                return found
            try:
                self._index.put("users", GUARD_ID, {"admin_changes": 0}, create=True, refresh="true")
            except ConflictError:
                continue  # another process created it first
        raise ConflictError("opensearch", "the admin guard document could not be read")

    def set_password(self, username: str, password: str, *, by: str) -> User:
        _check_password(password)
        user = self._change(username, lambda source: {**source, "password_hash": hash_password(password)})
        self._audit(by, "user.password", f"reset the password of {username}")
        return user

    def _keep_an_admin(self, username: str) -> None:
        """Refuse to take away the last enabled admin (nobody could administer users after that)."""
        body = {
            "size": 0,
            "query": {
                "bool": {
                    "filter": [{"term": {"role": ADMIN}}],
                    "must_not": [{"term": {"disabled": True}}, {"term": {"username": username}}],
                }
            },
        }
        if not self._index.search("users", body, track_total_hits=True)["hits"]["total"]["value"]:
            raise RequestError(f"{username} is the last admin: make another user admin first")

    def _change(self, username: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> User:
        return self._write(username, change)[0]

    def _write(self, username: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[User, dict[str, Any]]:
        """Write ``change(source)`` with the next session generation, so every session of the user ends
        with the change; re-read and retry if someone else wrote the user in between. Returns the user
        and the source the change was applied to."""
        for _ in range(WRITE_ATTEMPTS):
            found = self._index.get("users", username) if USERNAME.match(username) else None
            if found is None:
                raise NotFound(f"no user {username!r}")
            source = dict(found.source)
            doc = {**change(source), "session_generation": int(source.get("session_generation") or 0) + 1}
            try:
                self._index.put("users", username, doc, expected=found, refresh="true")
            except ConflictError:
                continue
            return _user(doc), source
        raise ConflictError("opensearch", f"user {username!r} changed repeatedly; nothing changed, retry")

    def history(self, size: int = 20) -> builtins.list[dict[str, Any]]:
        """The latest changes to users, newest first (from the audit trail)."""
        body = {"size": size, "query": {"prefix": {"action": "user."}}, "sort": [{"at": {"order": "desc"}}]}
        return [hit["_source"] for hit in self._index.search("audit", body)["hits"]["hits"]]

    def _audit(self, by: str, action: str, detail: str) -> None:
        doc = {"at": now_iso(), "user": by, "action": action, "detail": detail}
        self._index.put("audit", uuid.uuid4().hex, doc, refresh=True)
        log.info("%s by %s", detail, by)

    def delete(self, username: str) -> bool:
        deleted = self._index.delete("users", username)
        self._index.refresh("users")
        return deleted
