"""What one ``syncd`` invocation works with: its configuration and database, loaded when first asked for.

A module of its own so that the command modules can name :class:`AppContext`
without importing the command group (``syncd.cli``), which imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncd.config import Config

__all__ = ["AppContext"]


@dataclass
class AppContext:
    """Lazily loaded configuration and database for one invocation."""

    config_path: str | None
    _config: Config | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from syncd.config import load_config, resolve_config_path
            from syncd.logs import configure_logging

            self._config = load_config(resolve_config_path(self.config_path))
            configure_logging(self._config.logging.level, self._config.logging.format, self._config.secrets())
            for warning in self._config.warnings:
                click.echo(f"warning: {warning}", err=True)
        return self._config

    def check_provider_names(self, names: tuple[str, ...] | list[str]) -> None:
        """A usage error (exit 2) naming each of ``names`` the configuration has no provider of."""
        known = {p.name for p in self.config.providers}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise click.UsageError(f"unknown provider {', '.join(unknown)} (configured: {', '.join(sorted(known))})")

    def engine(self, *, check: bool = True) -> Engine:
        """The configured database; refuses (SchemaError) when the schema is behind."""
        if self._engine is None:
            from syncd.db.engine import make_engine
            from syncd.db.migrate import check_schema

            self._engine = make_engine(self.config.database.url)
            if check:
                check_schema(self._engine, allow_create_sqlite=True)
        return self._engine

    def close(self) -> None:
        """Release the database connections (the pool would otherwise outlive the command)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
