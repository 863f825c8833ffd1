"""The checks `edge-mtl run` makes before it opens cameras and models, shared with `edge-mtl check-config`.

The systemd unit runs `check-config` before every start (ExecStartPre), and an upgrade is checked with it before the
restart: it must refuse every config that `run` would refuse, with the same one line. So both call
`check_run_config`; it touches no camera, model, queue or network, and raises InputError (exit 2) on the first
problem:

* at least one camera, each with a source that can work (scheme, host, device node present, file present);
* `service.metrics_port`: not a privileged port (the daemon runs as an unprivileged user and could not bind it),
  on a loopback `service.metrics_host` unless the API token is set (and `api.enabled` needs the token);
* each forwarder: its client library installed, its password file readable, a username beside it, a topic
  without wildcards.

`check-config` also loads the configured models' metadata (`models_registry.check_models`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from edge_mtl.config import AppConfig, CameraConfig
from edge_mtl.errors import InputError

log = logging.getLogger(__name__)

#: Ports below this need root or CAP_NET_BIND_SERVICE, which the edge-mtl user does not have.
FIRST_UNPRIVILEGED_PORT = 1024


def check_run_config(cfg: AppConfig, cameras: Sequence[CameraConfig] | None = None) -> None:
    """Everything `run` checks before opening cameras and models; `cameras` defaults to the config's (the command
    line's --source replaces them)."""
    from edge_mtl.capture import open_source
    from edge_mtl.web.auth import check_bind, resolve_token

    cams = list(cfg.cameras if cameras is None else cameras)
    if not cams:
        raise InputError("no source: give --source FILE|rtsp://...|/dev/videoN or [[cameras]] in --config")
    for c in cams:
        try:
            open_source(c)  # built, not started: validates the source without opening it
        except InputError as e:
            raise InputError(f"camera {c.name}: {e}") from None
    svc = cfg.service
    if svc.metrics_port is not None:
        if svc.metrics_port < FIRST_UNPRIVILEGED_PORT:
            raise InputError(
                f"service.metrics_port {svc.metrics_port}: a privileged port (below {FIRST_UNPRIVILEGED_PORT}) that "
                "the daemon's unprivileged user cannot listen on; use a port from 1024 to 65535"
            )
        check_bind(cfg, resolve_token(cfg))  # a non-loopback bind or the API needs the token (docs/dashboards.md)
    if cfg.forwarders:
        from edge_mtl.events.mqtt import _import_paho, check_mqtt_config

        _import_paho()
        for fw in cfg.forwarders:
            check_mqtt_config(fw)
