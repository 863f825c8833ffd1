"""`edge-mtl collect`'s configuration (collector.toml, one `[collector]` section), validated like edge-mtl.toml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from edge_mtl.config import BrokerConfig, Strict, load_toml


class CollectorBroker(BrokerConfig):
    """The broker the boxes' forwarders publish to (or a bridge that carries their topics)."""

    topic: str = Field("edge-mtl/events", min_length=1, description="The boxes' forwarder topic; '/#' is added.")
    session_expiry_s: int = Field(
        7 * 86400, ge=60, le=0xFFFFFFFE,
        description="How long the broker keeps the collector's session (and queues its events) while it is away.",
    )
    control_topic: str = Field(
        "edge-mtl/control", min_length=1,
        description="Where the collector asks a box to resend events it never got: <control_topic>/[site/]<box>/"
        "replay (the boxes' forwarders' control_topic); they answer what they no longer hold on .../gone.",
    )
    receive_maximum: int = Field(
        1000, ge=1, le=65535,
        description="Events the broker may send before the collector acknowledges them (acknowledged only once "
        "committed in PostgreSQL). The broker's own max_inflight_messages caps it too (docs/fleet.md).",
    )

    @field_validator("topic", "control_topic")
    @classmethod
    def _plain_topic(cls, v: str) -> str:
        if any(c in v for c in "+#\0"):
            raise ValueError("must not contain '+', '#' or NUL")
        return v.rstrip("/")


class CollectorDatabase(Strict):
    dsn: str = Field(
        "dbname=edge_mtl", min_length=1,
        description="libpq connection string or postgresql:// URL, without the password (password_file, "
        "~/.pgpass or PGPASSFILE).",
    )
    password_file: Path | None = Field(None, description="File holding the database password.")
    db_schema: str = Field("edge_mtl", alias="schema", description="PostgreSQL schema the tables are created in.")
    connect_timeout_s: int = Field(10, ge=1, le=600, description="Give up a connection attempt after this.")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Reconnect delays double up to this.")

    @field_validator("dsn")
    @classmethod
    def _no_inline_password(cls, v: str) -> str:
        if re.search(r"(^|\s)password\s*=|://[^/@]*:[^/@]*@", v):
            raise ValueError("put the password in password_file (or ~/.pgpass), not in the connection string")
        return v

    @field_validator("db_schema")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", v):
            raise ValueError("a lowercase identifier: letters, digits, '_'")
        return v


class CollectorConfig(Strict):
    """`[collector]`: what `edge-mtl collect` subscribes to, where it writes, how it batches and retains."""

    broker: CollectorBroker = Field(default_factory=CollectorBroker)
    database: CollectorDatabase = Field(default_factory=CollectorDatabase)
    batch_size: int = Field(500, ge=1, le=100_000, description="Events per PostgreSQL transaction at most.")
    batch_wait_s: float = Field(0.2, gt=0, le=60, description="Wait this long for a batch to fill.")
    retention_days: float = Field(90.0, gt=0, description="Delete events whose capture time is older than this.")
    retention_interval_s: float = Field(3600.0, gt=0, description="Apply retention this often.")
    lag_log_interval_s: float = Field(60.0, gt=0, description="Log each box's lag this often.")
    backfill: bool = Field(
        True, description="Ask a named box to resend the events of its seq that never arrived (docs/fleet.md, "
        "'Automatic backfill')."
    )
    backfill_grace_s: float = Field(
        10.0, gt=0, le=3600, description="A gap is first asked for this long after it was found or last narrowed."
    )
    backfill_retry_s: float = Field(
        30.0, gt=0, le=86400, description="Ask again after this long without the gap narrowing, doubling each time."
    )
    backfill_retry_max_s: float = Field(600.0, gt=0, le=86400, description="The longest wait between requests.")
    backfill_give_up_s: float = Field(
        86400.0, gt=0,
        description="Give a gap up (logged, kept in the gaps table, counted in metrics) after this long without "
        "it narrowing: the box no longer holds those events, or is gone.",
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics on metrics_host:PORT (none: no listener)."
    )
    metrics_host: str = Field("127.0.0.1", description="Listen address for metrics (loopback only).")


class CollectorFile(Strict):
    """collector.toml."""

    collector: CollectorConfig = Field(default_factory=CollectorConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def load_collector_config(path: str | Path) -> CollectorFile:
    return load_toml(path, CollectorFile)
