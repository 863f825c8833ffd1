"""The daemon's HTTP side: /metrics, /health, the local events API and the live page (docs/dashboards.md)."""
