"""In-process publish/subscribe: ordered delivery, subscriber isolation, thread-safe.

Publishing stamps the event (UTC time, sequence number, host) under one lock and delivers
it to every subscriber in subscription order before the next event is delivered, so all
sinks see one total order. A subscriber that raises is logged and counted, and the error
reaches neither the publisher nor the other subscribers; a ``SubscriberFailed`` event is
then published (never for a failure while handling ``SubscriberFailed`` itself).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Final, final

import structlog

from daemon.clock import Clock
from daemon.events import Event, SubscriberFailed

Subscriber = Callable[[Event], None]
log = structlog.get_logger("kernelwatch.bus")


@final
class EventBus:
    """The one stream of events; see the module docstring for its guarantees."""

    def __init__(self, clock: Clock, *, host: str | None = None, first_seq: int = 1) -> None:
        self._clock: Final = clock
        self._host: Final = host or socket.gethostname()
        self._next_seq = first_seq
        self._subscribers: list[tuple[str, Subscriber]] = []
        # Reentrant: a subscriber may publish (the recovery engine does); such events are
        # queued and delivered after the current one, preserving a single total order.
        self._lock = threading.RLock()
        self._pending: list[Event] = []
        self._delivering = False
        self.failures: dict[str, int] = {}

    @property
    def host(self) -> str:
        return self._host

    @property
    def next_seq(self) -> int:
        with self._lock:
            return self._next_seq

    def subscribe(self, name: str, subscriber: Subscriber) -> None:
        """Add a subscriber; ``name`` labels its failures in logs and metrics."""
        with self._lock:
            if any(existing == name for existing, _ in self._subscribers):
                raise ValueError(f"subscriber {name!r} is already subscribed")
            self._subscribers.append((name, subscriber))

    def subscriber_names(self) -> tuple[str, ...]:
        """The names of the current subscribers, in delivery order."""
        with self._lock:
            return tuple(name for name, _ in self._subscribers)

    def unsubscribe(self, name: str) -> None:
        with self._lock:
            self._subscribers = [(n, s) for n, s in self._subscribers if n != name]

    def publish(self, event: Event) -> Event:
        """Stamp and deliver ``event``; return the stamped event. Never raises for subscribers."""
        with self._lock:
            stamped = event.stamped(at=self._clock.now(), seq=self._next_seq, host=self._host)
            self._next_seq += 1
            self._pending.append(stamped)
            if self._delivering:
                return stamped
            self._delivering = True
            try:
                while self._pending:
                    self._deliver(self._pending.pop(0))
            finally:
                self._delivering = False
            return stamped

    def _deliver(self, event: Event) -> None:
        for name, subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception as exc:  # isolation is this class's job: logged with its traceback
                self.failures[name] = self.failures.get(name, 0) + 1
                log.error(
                    "subscriber_failed",
                    subscriber=name,
                    event_type=event.type_name,
                    error=repr(exc),
                    exc_info=True,
                )
                if not isinstance(event, SubscriberFailed):
                    self._pending.append(
                        SubscriberFailed(
                            subscriber=name, event_type=event.type_name, error=repr(exc)
                        ).stamped(at=self._clock.now(), seq=self._next_seq, host=self._host)
                    )
                    self._next_seq += 1
