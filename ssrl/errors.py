"""The few exceptions the platform raises on purpose; anything else is a bug."""

from __future__ import annotations


class SSRLError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero."""


class ConfigError(SSRLError, ValueError):
    """A configuration is invalid; lists every problem at once."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class RejectError(SSRLError):
    """One input (image, depth map) cannot be used; the generator skips it with this reason."""


class StoreError(SSRLError):
    """A store operation failed; the message names the full URL of the object."""


class StoreUnavailableError(StoreError):
    """The store itself cannot be used (unreachable, bad credentials, no bucket): retrying objects won't help."""
