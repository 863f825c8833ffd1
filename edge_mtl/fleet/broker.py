"""A paho MQTT 5 client for a configured broker (`BrokerConfig`): credentials from a file, TLS, reconnect backoff."""

from __future__ import annotations

from typing import Any

from edge_mtl.config import BrokerConfig
from edge_mtl.errors import InputError
from edge_mtl.events.mqtt import _import_paho, _read_password


def make_client(cfg: BrokerConfig, client_id: str, *, manual_ack: bool = False) -> Any:
    """An unconnected paho client (paho's network thread reconnects it with delays doubling from 1 s up to
    `cfg.reconnect_max_s` once `connect_async` + `loop_start` run it)."""
    mqtt = _import_paho()
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=cfg.client_id or client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if cfg.password_file is not None and cfg.username is None:
        raise InputError(f"MQTT {cfg.host}:{cfg.port}: password_file is set but username is not")
    if cfg.username is not None:
        client.username_pw_set(cfg.username, _read_password(cfg.password_file) if cfg.password_file else None)
    if cfg.tls:
        client.tls_set()
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(cfg.reconnect_max_s)))
    return client


def properties(packet: str, **values: int) -> Any:
    """MQTT 5 properties for a CONNECT/PUBLISH packet, e.g. properties("CONNECT", SessionExpiryInterval=60)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(getattr(PacketTypes, packet))
    for k, v in values.items():
        setattr(props, k, v)
    return props
