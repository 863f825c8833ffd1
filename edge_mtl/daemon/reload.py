"""SIGHUP: which settings differ between two configs, and which of them apply to the running daemon."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edge_mtl.config import AppConfig

#: Settings a SIGHUP applies to the running daemon (dotted prefixes); everything else needs a restart.
LIVE_SETTINGS = (
    "identity.threshold",
    "identity.false_accept_rate",
    "identity.margin",
    "identity.min_observations",
    "recognition.",
    "attributes.",
    "events.retention_days",
    "events.retention_max_events",
    "log_level",
)


def _flatten(d: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], d


def config_changes(old: AppConfig, new: AppConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted setting -> (old, new) for every difference; lists (cameras, forwarders) compare as a whole."""
    a, b = dict(_flatten(old.model_dump(mode="json"))), dict(_flatten(new.model_dump(mode="json")))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def is_live(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in LIVE_SETTINGS)
