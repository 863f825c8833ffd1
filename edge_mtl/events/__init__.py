"""Events: the `edge_mtl.event/v1` schema, the durable SQLite queue, the JSONL log and forwarders (docs/events.md).

Submodules are imported directly (`edge_mtl.events.queue`, ...); the MQTT forwarder imports paho-mqtt only
when one is created.
"""
