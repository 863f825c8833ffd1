"""The API's bearer token and the rules for where the HTTP server may listen.

* The token is read from `api.token_file`, or else from the systemd credential `api-token`
  (`LoadCredential=api-token:/etc/edge-mtl/api-token` puts it at `$CREDENTIALS_DIRECTORY/api-token`); it is never
  written in the config file. Surrounding whitespace is stripped; it must be at least 16 characters.
* `api.enabled` without a token is refused (the API serves names of people), and so is a non-loopback
  `service.metrics_host` without one: the server is then reachable from the network and every request must carry
  the token.
* Tokens are compared with `hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from edge_mtl.config import AppConfig
from edge_mtl.errors import InputError

CREDENTIAL_NAME = "api-token"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(cfg: AppConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The configured API token, or None when none is configured. InputError (exit 2) for an unreadable or too
    short one."""
    env = os.environ if environ is None else environ
    path: Path | None = cfg.api.token_file
    if path is None:
        creds = env.get("CREDENTIALS_DIRECTORY", "")
        cand = Path(creds) / CREDENTIAL_NAME if creds else None
        if cand is None or not cand.is_file():
            return None
        path = cand
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InputError(f"api.token_file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"api.token_file {path}: cannot read: {e}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in token):
        raise InputError(
            f"api.token_file {path}: the token must be at least {MIN_TOKEN_CHARS} printable characters without "
            "spaces (e.g. openssl rand -hex 32)"
        )
    return token


def check_bind(cfg: AppConfig, token: str | None) -> None:
    """Refuse (InputError, exit 2) an API without a token and a non-loopback listener without one."""
    host = cfg.service.metrics_host
    if cfg.api.enabled and token is None:
        raise InputError(
            "api.enabled needs a token: set api.token_file or pass the systemd credential "
            f"'{CREDENTIAL_NAME}' (LoadCredential=)"
        )
    if not is_loopback(host) and token is None:
        raise InputError(
            f"service.metrics_host {host!r}: a non-loopback address needs the API token (api.token_file or the "
            f"credential '{CREDENTIAL_NAME}'); metrics and health are otherwise served on loopback only "
            "(127.0.0.1 or ::1)"
        )


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `Bearer <token>` (constant-time comparison)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))
