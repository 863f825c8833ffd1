"""Exception types that map onto the CLI's exit codes (docs/architecture.md, rule 5).

`InputError` and its subclasses are the user's problem (bad file, bad config, wrong model): the CLI prints
their one-line message and exits 2. Anything else is a bug or an environment failure and exits 1.
"""

from __future__ import annotations


class EdgeMtlError(Exception):
    """Base class of all edge-mtl errors."""


class InputError(EdgeMtlError):
    """Bad input from the user: a file that is not an image, a missing path, a bad argument. Exit code 2."""


class ConfigError(InputError):
    """An invalid configuration file or value. Exit code 2."""


class ModelError(InputError):
    """A model or engine file that cannot be used (truncated, wrong metadata, built for another GPU)."""


class BackendUnavailableError(EdgeMtlError):
    """The requested inference backend or execution provider is not active (never silently replaced)."""


class MissingExtraError(InputError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"'{module}' is not installed: pip install 'edge-mtl[{extra}]'")
        self.module = module
        self.extra = extra
