"""Many boxes, one broker, one central store, one gallery (docs/fleet.md)."""
