"""The ``syncd`` command line (design §4). Exit codes: 0 ok, 1 a provider or the run failed, 2 bad usage or config.

Commands stay thin: they load what they need lazily and hand over to the
engine, the daemon or the views. Every failure a user can cause ends here as
one readable message and an exit code, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from syncd.cli.app import AppContext

if TYPE_CHECKING:
    from syncd.db.conflicts import Side

__all__ = ["main"]

P = ParamSpec("P")
R = TypeVar("R")


pass_app = click.make_pass_decorator(AppContext)


def catch_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn syncd's errors into a message and an exit code (vdirsyncer's ``catch_errors``)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.Abort):
            raise  # click reports these itself
        except Exception as err:
            message, code = _failure(err)
            click.echo(message, err=True)
            sys.exit(code)

    return wrapper


def _failure(err: Exception) -> tuple[str, int]:
    """What to say about ``err``, which ended a command, and the exit code: 2 for config and schema, else 1."""
    from syncd.errors import ConfigError, SchemaError, SyncdError

    if isinstance(err, ConfigError):
        from syncd.config import format_config_error

        return format_config_error(err), 2
    if isinstance(err, SyncdError):
        return f"error: {err}", 2 if isinstance(err, SchemaError) else 1
    return _unexpected(err), 1


def _unexpected(err: Exception) -> str:
    """The line for an error syncd did not raise itself: a database outage, or a bug (logged with its traceback)."""
    import structlog

    from syncd.dberrors import database_outage, describe_database_error

    outage = database_outage(err)
    if outage is not None:  # not a bug: the database is down, locked or unreachable
        return f"error: the database cannot be used: {describe_database_error(outage)}"
    # A bug: one redacted line here, the traceback in the (redacted) log; still inside the except, so it has it.
    structlog.get_logger("syncd.cli").exception("cli.crashed")
    return f"error: internal error ({type(err).__name__}); the log above has the details"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", envvar=None,
              help="Configuration file (default: $SYNCD_CONFIG, ./config.toml, /etc/syncd/config.toml).")
@click.version_option(package_name="syncd")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """syncd keeps a canonical contact book in step with SMS providers (smsend, SendHub)."""
    ctx.obj = app = AppContext(config_path)
    ctx.call_on_close(app.close)


@cli.group()
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
@pass_app
@catch_errors
def db_upgrade(app: AppContext) -> None:
    """Apply all migrations to the configured database (idempotent)."""
    from syncd.db.migrate import upgrade

    applied = upgrade(app.engine(check=False))
    click.echo("database schema upgraded to the latest version" if applied else "database schema already up to date")


@cli.command()
@click.option("--provider", "providers", multiple=True, metavar="NAME", help="Only this provider (repeatable).")
@click.option("--dry-run", is_flag=True, help="Pull and plan, change nothing (same as `syncd plan`).")
@click.option("--allow-mass-delete", is_flag=True, help="Let deletions beyond sync.max_delete_fraction through, once.")
@click.option("--full", is_flag=True, help="Reconcile every record, not only what changed (the safety net).")
@pass_app
@catch_errors
def sync(app: AppContext, providers: tuple[str, ...], dry_run: bool, allow_mass_delete: bool, full: bool) -> None:
    """One run now, printing a summary per provider."""
    from syncd.cli.commands import run_sync

    sys.exit(run_sync(app, providers, dry_run=dry_run, allow_mass_delete=allow_mass_delete, full=full))


@cli.command()
@click.option("--provider", "providers", multiple=True, metavar="NAME", help="Only this provider (repeatable).")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when nothing to do, 3 when changes are pending, 1 on error.")
@click.option("--full", is_flag=True, help="Plan over every record, not only what changed.")
@pass_app
@catch_errors
def plan(app: AppContext, providers: tuple[str, ...], detailed_exitcode: bool, full: bool) -> None:
    """Pull and print the plan (what would change, where and why) without changing anything."""
    from syncd.cli.commands import run_plan

    sys.exit(run_plan(app, providers, detailed_exitcode=detailed_exitcode, full=full))


@cli.command()
@pass_app
@catch_errors
def run(app: AppContext) -> None:
    """The daemon: a run every schedule.interval_seconds until SIGTERM/SIGINT."""
    from syncd.cli.commands import run_daemon

    sys.exit(run_daemon(app))


@cli.command()
@pass_app
@catch_errors
def status(app: AppContext) -> None:
    """Per provider: last run, its result and counts, failed/rejected records, next run."""
    from syncd.cli.views import show_status

    show_status(app.engine(), app.config)


@cli.command()
@click.option("--provider", metavar="NAME", help="Only this provider.")
@click.option("--run", "run_id", type=int, metavar="ID", help="Only this run.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most N rows.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@pass_app
@catch_errors
def log(app: AppContext, provider: str | None, run_id: int | None, limit: int, as_json: bool) -> None:
    """The change log, newest first."""
    from syncd.cli.views import show_log

    show_log(app.engine(), provider=provider, run_id=run_id, limit=limit, as_json=as_json)


@cli.command()
@click.argument("change_id", type=int)
@click.option("--keep", type=click.Choice(["local", "remote"]), required=True, help="Which side's version wins.")
@pass_app
@catch_errors
def resolve(app: AppContext, change_id: int, keep: Side) -> None:
    """Settle a conflict held by the `manual` policy; the next run carries it out."""
    from syncd.cli.commands import resolve_conflict

    sys.exit(resolve_conflict(app, change_id, keep))


@cli.group(invoke_without_command=True)
@click.option("--provider", metavar="NAME", help="Only this provider's.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
@click.pass_context
@catch_errors
def deletes(ctx: click.Context, provider: str | None, as_json: bool) -> None:
    """Deletions held for approval (providers with deletes = "approve"); approve or reject them."""
    if ctx.invoked_subcommand is None:
        from syncd.cli.deletes import show_deletes

        show_deletes(ctx.obj, provider=provider, as_json=as_json)


def _decision(approve: bool) -> Callable[..., None]:
    @click.argument("ids", type=int, nargs=-1, metavar="[ID]...")
    @click.option("--all", "every", is_flag=True, help="Every pending delete (of --provider, if given).")
    @click.option("--provider", metavar="NAME", help="With --all: only this provider's.")
    @pass_app
    @catch_errors
    def command(app: AppContext, ids: tuple[int, ...], every: bool, provider: str | None) -> None:
        from syncd.cli.deletes import decide_deletes

        sys.exit(decide_deletes(app, ids, every=every, provider=provider, approve=approve))

    return command


deletes.command("approve", help="Approve pending deletes: the next run carries them out.")(_decision(True))
deletes.command("reject", help="Reject pending deletes: the next run restores each record where it was deleted.")(
    _decision(False))


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows of a file with errors.")
@pass_app
@catch_errors
def import_(app: AppContext, file: str, skip_invalid: bool) -> None:
    """Load FILE.csv into the canonical book (phone,name,surname,email,groups,…)."""
    from syncd.cli.csvio import import_csv

    sys.exit(import_csv(app, file, skip_invalid=skip_invalid))


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@pass_app
@catch_errors
def export(app: AppContext, file: str) -> None:
    """Dump the canonical book to FILE.csv."""
    from syncd.cli.csvio import export_csv

    sys.exit(export_csv(app, file))


@cli.command()
@click.argument("kind", type=click.Choice(["smsend", "sendhub"]))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="0 picks a free port.")
@click.option("--contacts", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--groups", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--latency", type=float, default=0.0, help="Seconds added to every response.")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, help="Fraction of requests answered 500/503.")
@click.option("--throttle-rate", type=click.FloatRange(0, 1), default=0.0, help="Fraction of requests answered 429.")
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0, help="Fraction of writes applied, then the connection dropped.")
@click.option("--malformed-rate", type=click.FloatRange(0, 1), default=0.0, help="Fraction of responses with truncated JSON.")
@click.option("--quota-exhausted", is_flag=True, help="SendHub: answer every request 420.")
@click.option("--reject-credentials", is_flag=True, help="Refuse every credential.")
def simulate(kind: str, host: str, port: int, contacts: int, groups: int, seed: int, latency: float,
             error_rate: float, throttle_rate: float, drop_rate: float, malformed_rate: float,
             quota_exhausted: bool, reject_credentials: bool) -> None:
    """Serve a provider simulator on HOST:PORT (prints its base URL and credentials)."""
    from syncd.simulators.faults import Faults
    from syncd.simulators.server import serve_forever

    faults = Faults(latency=latency, error_rate=error_rate, throttle_rate=throttle_rate, drop_rate=drop_rate,
                    malformed_rate=malformed_rate, quota_exhausted=quota_exhausted,
                    reject_credentials=reject_credentials, seed=seed)
    serve_forever(kind, host=host, port=port, contacts=contacts, groups=groups, seed=seed, faults=faults)


@cli.command()
@click.option("--db", "db_path", default="syncd-demo.db", show_default=True, help="SQLite file (recreated).")
def demo(db_path: str) -> None:
    """The whole thing on the embedded default: simulators, a fresh SQLite file, several runs."""
    from syncd.cli.demo import run_demo

    sys.exit(run_demo(db_path))


def main() -> None:
    cli(prog_name="syncd")
