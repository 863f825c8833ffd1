"""Fixtures for the fleet tests: a real PostgreSQL server (skipped only when its binaries are absent) and a real
mosquitto broker configured as docs/fleet.md says a fleet's broker must be."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import shipped_models as shipped_models  # the fleet test runs the shipped models
from tests.events.events_helpers import Broker, mosquitto_path
from tests.events.events_helpers import free_port as free_port
from tests.fleet.fleet_helpers import Postgres, postgres_bin

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'edge-mtl[mqtt]')")

#: What a fleet's mosquitto needs beyond persistence (docs/fleet.md): room for the collector's unacknowledged
#: window, and no cap on what is queued for it while it or the database is away.
FLEET_BROKER = "max_inflight_messages 1000\nmax_queued_messages 0\nautosave_interval 5\n"


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    pg = Postgres(bindir)
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


@pytest.fixture
def fleet_broker(tmp_path: Path) -> Iterator[Broker]:
    binary = mosquitto_path()
    if binary is None:
        pytest.skip("mosquitto binary not found (apt-get install mosquitto)")
    d = tmp_path / "broker"
    d.mkdir()
    b = Broker(binary, d, free_port(), extra=FLEET_BROKER, persistence=True)
    b.start()
    yield b
    b.stop()
