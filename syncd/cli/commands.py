"""The engine-facing commands: sync, plan, run (the daemon), resolve."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from syncd.cli.views import SUMMARY_KEYS, render_table

if TYPE_CHECKING:
    from syncd.cli.app import AppContext
    from syncd.config import Config
    from syncd.db.conflicts import Side
    from syncd.db.leases import Busy
    from syncd.sync.run import RunReport

__all__ = ["print_plan", "print_summary", "resolve_conflict", "run_daemon", "run_plan", "run_sync"]


def run_sync(app: AppContext, providers: tuple[str, ...], *, dry_run: bool, allow_mass_delete: bool,
             full: bool = False) -> int:
    """``syncd sync``: one run of the enabled accounts (those named, if any) whose leases it gets."""
    if dry_run:
        return run_plan(app, providers, detailed_exitcode=False, full=full)
    from syncd.cli.progress import terminal_progress
    from syncd.db.leases import LeaseManager, lease_ttl
    from syncd.runner import enabled_accounts, run_leased

    app.check_provider_names(providers)
    config, engine = app.config, app.engine()
    accounts = enabled_accounts(config, providers)
    # The daemon's leases: a manual sync never syncs an account a replica is syncing.
    leases = LeaseManager(engine, ttl=lease_ttl(config.schedule.interval_seconds))
    outcome = run_leased(config, engine, leases, accounts, on_busy=_say_busy, progress=terminal_progress,
                         allow_mass_delete=allow_mass_delete, full=full)
    if outcome.report is None:
        if outcome.busy:
            return 1
        click.echo(f"Nothing to sync: {_no_account(providers)}.")
        return 0
    print_summary(outcome.report)
    return 1 if outcome.report.failed or outcome.busy else 0


def _say_busy(busy: Busy) -> None:
    click.echo(f"error: {busy.describe()}: skipped, try again when that run ends", err=True)


def _no_account(providers: tuple[str, ...]) -> str:
    if providers:
        return f"{', '.join(providers)} {'is' if len(providers) == 1 else 'are'} disabled (enabled = false)"
    return "no provider is enabled"


def run_plan(app: AppContext, providers: tuple[str, ...], *, detailed_exitcode: bool, full: bool = False) -> int:
    from syncd.cli.progress import terminal_progress
    from syncd.sync.run import run_once

    app.check_provider_names(providers)
    report = asyncio.run(run_once(app.config, app.engine(), only=providers, dry_run=True, full=full,
                                  progress=terminal_progress()))
    print_plan(report)
    if report.failed:
        return 1
    return 3 if detailed_exitcode and report.pending_changes else 0


def print_summary(report: RunReport) -> None:
    rows = [[p.name, p.status] + [p.counts.get(k, 0) for k in SUMMARY_KEYS] for p in report.providers]
    click.echo(f"Run #{report.run_id}: {report.status}")
    click.echo(render_table(["provider", "status", *SUMMARY_KEYS], rows))
    for p in report.providers:
        if p.error:
            click.echo(f"error: {p.name}: {p.error}", err=True)
        for op in p.plan:
            if op.action.value == "guarded":
                click.echo(f"guarded: {p.name}: {op.reason}", err=True)
    if report.invalid:
        click.echo(f"{len(report.invalid)} canonical record(s) skipped as invalid: see `syncd status`", err=True)


def print_plan(report: RunReport) -> None:
    rows = []
    for p in report.providers:
        if p.error:
            click.echo(f"error: {p.name}: {p.error}", err=True)
        for op in p.plan:
            if op.is_change or op.action.value in ("conflict", "guarded", "duplicate") or op.skip_reason:
                status = "held" if op.held else ("skip: " + op.skip_reason if op.skip_reason else "")
                rows.append([p.name, op.direction.value, op.action.value, op.entity.value, op.key or op.remote_id,
                             op.reason, status])
    if not rows:
        click.echo("Nothing to do: every provider is in step with the canonical book.")
        return
    click.echo(render_table(["provider", "direction", "action", "entity", "record", "why", ""], rows, max_width=90))
    click.echo(f"\n{sum(1 for p in report.providers for op in p.plan if op.is_change)} change(s) pending.")


def resolve_conflict(app: AppContext, change_id: int, keep: Side) -> int:
    """``syncd resolve``: settle a held conflict; the next run carries the decision out."""
    from syncd.sync.resolve import resolve

    message = resolve(app.engine(), change_id, keep)
    click.echo(message)
    return 0


def run_daemon(app: AppContext) -> int:
    """``syncd run``: the daemon on the loaded configuration and the checked database, until SIGTERM/SIGINT."""
    import logging
    import os

    from syncd.daemon import Daemon

    config = app.config
    daemon = Daemon(_reloader(config), config=config, engine=app.engine())
    code = daemon.serve()
    if daemon.abandoned:
        # The worker thread is stuck in a request: do not let interpreter shutdown wait for it.
        logging.shutdown()
        os._exit(code)
    return code


def _reloader(config: Config) -> Callable[[], Config]:
    """What SIGHUP loads: the file ``config`` was read from; a Config built in code has none to reload."""
    from syncd.config import load_config
    from syncd.errors import ConfigError

    path = config.path
    if path is None:
        def refuse() -> Config:
            raise ConfigError(["the configuration was not read from a file; nothing to reload"])
        return refuse
    return lambda: load_config(path)
