"""Tests for the event bus: ordering, stamping, isolation, thread safety."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from daemon.bus import EventBus
from daemon.clock import FakeClock
from daemon.events import DaemonStopping, Event, SubscriberFailed


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 4, 0, 0, tzinfo=UTC))


def test_publish_stamps_time_sequence_and_host(clock: FakeClock) -> None:
    """Published events carry the clock's UTC time, consecutive sequence numbers and the host."""
    bus = EventBus(clock, host="h1", first_seq=41)
    first = bus.publish(DaemonStopping(reason="a"))
    clock.advance(5)
    second = bus.publish(DaemonStopping(reason="b"))
    assert (first.seq, second.seq) == (41, 42)
    assert first.host == "h1"
    assert second.at == datetime(2026, 1, 4, 0, 0, 5, tzinfo=UTC)


def test_subscribers_see_every_event_in_order(clock: FakeClock) -> None:
    """Each subscriber receives all events in publication order."""
    bus = EventBus(clock)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    bus.subscribe("a", lambda e: seen["a"].append(e.seq))
    bus.subscribe("b", lambda e: seen["b"].append(e.seq))
    for i in range(5):
        bus.publish(DaemonStopping(reason=str(i)))
    assert seen["a"] == seen["b"] == [1, 2, 3, 4, 5]


def test_failing_subscriber_is_isolated_and_reported(clock: FakeClock) -> None:
    """An exception in one subscriber reaches neither the publisher nor other subscribers."""
    bus = EventBus(clock)
    received: list[Event] = []

    def broken(event: Event) -> None:
        if isinstance(event, DaemonStopping):
            raise RuntimeError("boom")

    bus.subscribe("broken", broken)
    bus.subscribe("good", received.append)
    bus.publish(DaemonStopping(reason="x"))
    assert [type(e) for e in received] == [DaemonStopping, SubscriberFailed]
    failure = received[1]
    assert isinstance(failure, SubscriberFailed)
    assert failure.subscriber == "broken"
    assert "boom" in failure.error
    assert bus.failures == {"broken": 1}


def test_failure_while_handling_subscriber_failed_does_not_loop(clock: FakeClock) -> None:
    """A subscriber that fails on everything yields one SubscriberFailed per original event."""
    bus = EventBus(clock)
    received: list[Event] = []

    def always_broken(event: Event) -> None:
        raise ValueError("always")

    bus.subscribe("broken", always_broken)
    bus.subscribe("good", received.append)
    bus.publish(DaemonStopping(reason="x"))
    assert [type(e).__name__ for e in received] == ["DaemonStopping", "SubscriberFailed"]


def test_events_published_from_a_subscriber_follow_the_current_one(clock: FakeClock) -> None:
    """A subscriber that publishes does not reorder delivery: all subscribers see one order."""
    bus = EventBus(clock)
    order_a: list[str] = []
    order_b: list[str] = []

    def reactor(event: Event) -> None:
        order_a.append(getattr(event, "reason", ""))
        if getattr(event, "reason", "") == "first":
            bus.publish(DaemonStopping(reason="reaction"))

    bus.subscribe("reactor", reactor)
    bus.subscribe("b", lambda e: order_b.append(getattr(e, "reason", "")))
    bus.publish(DaemonStopping(reason="first"))
    assert order_a == order_b == ["first", "reaction"]


def test_concurrent_publishers_get_unique_increasing_sequence_numbers(clock: FakeClock) -> None:
    """Sequence numbers are unique and delivery order matches them under concurrency."""
    bus = EventBus(clock)
    delivered: list[int] = []
    bus.subscribe("collect", lambda e: delivered.append(e.seq))

    def publish_many() -> None:
        for _ in range(500):
            bus.publish(DaemonStopping(reason="t"))

    threads = [threading.Thread(target=publish_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert delivered == list(range(1, 2001))


def test_duplicate_subscriber_name_is_refused(clock: FakeClock) -> None:
    """Subscriber names label metrics, so they must be unique."""
    bus = EventBus(clock)
    bus.subscribe("x", lambda e: None)
    with pytest.raises(ValueError, match="already subscribed"):
        bus.subscribe("x", lambda e: None)
