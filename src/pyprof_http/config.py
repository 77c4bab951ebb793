"""Settings, read once from the constructor and ``PYPROF_*`` environment variables.

Settings are immutable so that a running sub-app can never be loosened after its security
checks ran; build a new app to change them.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(ValueError):
    """The settings are unsafe or inconsistent; the message says how to fix them."""


class Settings(BaseSettings):
    """Everything pyprof_http can be told. Every field can be set as ``PYPROF_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PYPROF_", frozen=True, extra="forbid")

    profiles: frozenset[str] | None = Field(
        default=None,
        description="Allowlist of profile names served; None serves every profile. Others are 404.",
    )
    max_profile_seconds: int = Field(
        default=60, ge=1, le=3600, description="Upper bound for any seconds= parameter."
    )
    max_stack_depth: int = Field(
        default=128, ge=1, le=4096, description="Frames kept per stack; deeper stacks are cut."
    )

    def allows(self, profile: str) -> bool:
        """Whether ``profile`` is on the allowlist."""
        return self.profiles is None or profile in self.profiles
