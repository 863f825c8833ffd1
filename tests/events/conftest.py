"""Fixtures for the events tests: a queue in tmp_path and a real mosquitto broker (skipped if absent)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from events_helpers import Broker, free_port, mosquitto_path

from edge_mtl.events.queue import EventQueue


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[EventQueue]:
    q = EventQueue(tmp_path / "events.db")
    yield q
    q.close()


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    found = mosquitto_path()
    if found is None:
        pytest.skip("mosquitto binary not found (apt-get install mosquitto); MQTT tests need a real broker")
    return found


@pytest.fixture
def make_broker(mosquitto_binary: str, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory: make_broker(extra="...", persistence=False) -> a started Broker, stopped at teardown."""
    brokers: list[Broker] = []

    def factory(extra: str = "", persistence: bool = False) -> Broker:
        d = tmp_path / f"broker{len(brokers)}"
        d.mkdir()
        b = Broker(mosquitto_binary, d, free_port(), extra=extra, persistence=persistence)
        brokers.append(b)
        b.start()
        return b

    yield factory
    for b in brokers:
        b.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()
