"""Configuration: a TOML file parsed into frozen, typed settings (design §5).

The dataclasses below are the contract the rest of syncd reads. ``load_config``
validates a file into them, reporting every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class Secret:
    """A credential value, resolved at load time; never shown by ``repr`` or ``str``."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "literal") -> None:
        self._value = value
        self.source = source  # "literal", "env:VAR" or "file:PATH": safe to show

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<hidden, {self.source}>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = "sqlite:///var/lib/syncd/syncd.db"


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    interval_seconds: float = 300


@dataclass(frozen=True, slots=True)
class SyncSettings:
    conflict: str = "local"  # local | remote | newest | manual
    default_region: str = "IT"
    max_delete_fraction: float = 0.25
    log_retention_days: int = 90


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "info"  # debug | info | warning | error
    format: str = "auto"  # auto | console | json


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    listen: str | None = None  # "host:port"; None = off


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    type: str  # smsend | sendhub
    base_url: str
    mode: str = "two-way"  # two-way | push | pull
    conflict: str | None = None  # overrides sync.conflict when set
    requests_per_second: float = 5.0
    max_concurrency: int = 4
    batch_size: int = 500
    timeout_seconds: float = 30.0
    tls_verify: bool = True
    enabled: bool = True
    username: str | None = None
    user_key: str | None = None
    password: Secret | None = None
    access_token: Secret | None = None
    session_key: Secret | None = None
    api_key: Secret | None = None

    def secrets(self) -> list[str]:
        """Every secret value of this provider (for redaction)."""
        return [s.get() for s in (self.password, self.access_token, self.session_key, self.api_key) if s]


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None = None
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    providers: tuple[ProviderSettings, ...] = ()
    warnings: tuple[str, ...] = ()

    def secrets(self) -> list[str]:
        return [s for p in self.providers for s in p.secrets()]

    def conflict_for(self, provider: ProviderSettings) -> str:
        return provider.conflict or self.sync.conflict
