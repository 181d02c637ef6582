"""The login throttle on the real node: counts shared by every process, back-off, reset on success."""

from __future__ import annotations

import pytest
from smarttags.core.logins import MAX_BLOCK_SECONDS, Attempt, LoginThrottle

pytestmark = pytest.mark.slow


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_blocks_back_off_and_reset(services) -> None:
    clock = Clock()
    one, two = LoginThrottle(services.index, 2, clock), LoginThrottle(services.index, 2, clock)
    mallory = Attempt.of("Admin", "203.0.113.9")
    one.failed(mallory)
    assert one.blocked_for(mallory) == 0
    two.failed(mallory)  # another process: the second failure of the same key
    assert one.blocked_for(mallory) == 60
    assert one.blocked_for(Attempt.of("admin", "198.51.100.1")) == 0  # the account elsewhere is free
    blocks = []
    for _ in range(8):  # each further block of the key lasts twice as long, up to the cap
        clock.now += one.blocked_for(mallory)
        one.failed(mallory)
        two.failed(mallory)
        blocks.append(one.blocked_for(mallory))
    assert blocks[:3] == [120, 240, 480]
    assert blocks[-1] == MAX_BLOCK_SECONDS
    clock.now += 2 * MAX_BLOCK_SECONDS  # clean for long enough: back to one minute
    one.failed(mallory)
    two.failed(mallory)
    assert one.blocked_for(mallory) == 60


def test_a_client_gets_four_times_the_tries_over_all_names_and_success_clears_the_account(services) -> None:
    throttle = LoginThrottle(services.index, 2, Clock())
    throttle.failed(Attempt.of("alice", "192.0.2.1"))
    throttle.succeeded(Attempt.of("alice", "192.0.2.1"))
    throttle.failed(Attempt.of("alice", "192.0.2.1"))
    assert throttle.blocked_for(Attempt.of("alice", "192.0.2.1")) == 0  # the success cleared the first
    for name in ("bob", "carol", "dave", "erin", "frank", "grace"):
        assert throttle.blocked_for(Attempt.of(name, "192.0.2.1")) == 0
        throttle.failed(Attempt.of(name, "192.0.2.1"))
    assert throttle.blocked_for(Attempt.of("zoe", "192.0.2.1")) == 60  # 8 failures of the client
    assert throttle.blocked_for(Attempt.of("zoe", "192.0.2.2")) == 0
