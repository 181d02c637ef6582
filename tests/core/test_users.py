"""The last-admin rule under concurrency, on the real OpenSearch: two admins demoting each other at once."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from smarttags.core.users import ADMIN, UserStore
from smarttags.errors import RequestError

pytestmark = pytest.mark.slow

PASSWORD = "a long enough password"


class ChecksMeet:
    """The users index, where the first last-admin check of each of two threads waits for the other's:
    both checks run before either change is written, the interleaving that lost the last admin."""

    def __init__(self, index: Any) -> None:
        self._index = index
        self._barrier = threading.Barrier(2, timeout=10)
        self._waited: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def search(self, kind: str, body: Any, **kwargs: Any) -> Any:
        found = self._index.search(kind, body, **kwargs)
        if kind == "users" and body.get("size") == 0 and threading.get_ident() not in self._waited:
            self._waited.add(threading.get_ident())
            self._barrier.wait()
        return found


@pytest.mark.parametrize("action", ["demote", "disable"])
def test_two_concurrent_changes_cannot_take_away_the_last_admin(services: Any, action: str) -> None:
    plain = UserStore(services.index)
    plain.create("ann", PASSWORD, ADMIN)
    plain.create("bob", PASSWORD, ADMIN)
    store = UserStore(ChecksMeet(services.index))
    outcomes: dict[str, str] = {}

    def change(name: str) -> None:
        try:
            if action == "demote":
                store.set_role(name, "viewer", by="tester")
            else:
                store.set_disabled(name, True, by="tester")
            outcomes[name] = "changed"
        except RequestError as exc:
            outcomes[name] = str(exc)

    threads = [threading.Thread(target=change, args=(name,)) for name in ("ann", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Both checks passed (each saw the other admin); only one change stands, the other was refused.
    changed = [name for name, outcome in outcomes.items() if outcome == "changed"]
    refused = [name for name, outcome in outcomes.items() if "is the last admin" in outcome]
    assert len(changed) == 1 and len(refused) == 1
    admins = [u.username for u in plain.list() if u.role == ADMIN and not u.disabled]
    assert admins == refused
    # The guard document is no user; the refused user's own record is as before.
    assert {u.username for u in plain.list()} == {"ann", "bob"}
    kept = plain.get(admins[0])
    assert kept is not None and kept.role == ADMIN and not kept.disabled


def test_promoting_and_re_enabling_need_no_guard_and_the_rule_still_holds(services: Any) -> None:
    store = UserStore(services.index)
    store.create("ann", PASSWORD, ADMIN)
    store.create("bob", PASSWORD, "viewer")
    with pytest.raises(RequestError, match="last admin"):
        store.set_disabled("ann", True, by="tester")
    store.set_role("bob", ADMIN, by="ann")
    store.set_disabled("ann", True, by="bob")
    with pytest.raises(RequestError, match="last admin"):
        store.set_role("bob", "viewer", by="bob")
    store.set_disabled("ann", False, by="bob")
    store.set_role("bob", "viewer", by="ann")
    assert [(u.username, u.role, u.disabled) for u in store.list()] == [("ann", ADMIN, False), ("bob", "viewer", False)]
