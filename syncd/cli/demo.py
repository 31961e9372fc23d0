"""`syncd demo`: the whole thing on the embedded default.

Both simulators run in this process over real HTTP on 127.0.0.1 with sample
data; a fresh SQLite file is the canonical book. Several sync runs follow, with
changes made on each side in between, and each run's change log is printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import click
from sqlalchemy import Engine

from syncd.config import Config, DatabaseSettings, LoggingSettings, ProviderSettings, Secret, SyncSettings
from syncd.db.engine import make_engine
from syncd.db.migrate import upgrade
from syncd.db.outside_edits import insert_contacts, rename_contact
from syncd.db.reports import run_changes
from syncd.simulators import Faults, SimulatorServer, start_simulator
from syncd.simulators.sendhub import SendHubAccount

__all__ = ["run_demo"]

Step = tuple[str, Callable[[], str] | None]
"""A run's title, and the change made before it (None: nothing changes)."""


def _settings(server: SimulatorServer, name: str) -> ProviderSettings:
    creds = server.credentials
    if server.kind == "smsend":
        return ProviderSettings(name=name, type="smsend", base_url=server.base_url, user_key=creds["user_key"],
                                access_token=Secret(creds["access_token"]), requests_per_second=200)
    return ProviderSettings(name=name, type="sendhub", base_url=server.base_url, username=creds["username"],
                            api_key=Secret(creds["api_key"]), requests_per_second=200)


def run_demo(db_path: str) -> int:
    from syncd.logs import configure_logging

    configure_logging("warning", "console")
    path = Path(db_path)
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    with start_simulator("sendhub", contacts=12, groups=3, seed=7, faults=Faults()) as sendhub, \
         start_simulator("smsend", contacts=0, groups=2, seed=7, faults=Faults()) as smsend:
        config = Config(database=DatabaseSettings(url), sync=SyncSettings(default_region="US"),
                        logging=LoggingSettings(level="warning"),
                        providers=(_settings(smsend, "smsend"), _settings(sendhub, "sendhub")))
        click.echo(f"Canonical book: {path.resolve()}\nsmsend simulator:  {smsend.base_url}\n"
                   f"SendHub simulator: {sendhub.base_url}\n")
        steps = _steps(engine, sendhub)
        failed = False
        for title, change in steps:
            if change is not None:
                click.echo(f"  change: {change()}")
            failed |= _run(config, engine, title)
        click.echo("\n`syncd --config <file> log` and `syncd status` show the same tables for a configured install.")
    engine.dispose()
    return 1 if failed else 0


def _steps(engine: Engine, sendhub: SimulatorServer) -> list[Step]:
    """The demo's runs in order, each with the change made just before it."""
    account: SendHubAccount = sendhub.state

    def edit_at_sendhub() -> str:
        contact = next(iter(account.contacts.values()))
        account.edit_contact(contact.id, name="Renamed AtSendHub")
        return f"SendHub contact {contact.number} renamed to 'Renamed AtSendHub'"

    def add_by_sql() -> str:
        insert_contacts(engine, [("+393471234567", "Giulia", "Rossi", "giulia@example.it"),
                                 ("(415) 867-5309", "Jenny", "Tutone", "")])
        return "two contacts inserted by SQL: an Italian number (SendHub will refuse it) and '(415) 867-5309'"

    def delete_at_sendhub() -> str:
        contact = list(account.contacts.values())[1]
        account.delete_contact(contact.id)
        return f"SendHub contact {contact.number} deleted at SendHub"

    def conflict() -> str:
        contact = list(account.contacts.values())[2]
        account.edit_contact(contact.id, name="Remote Version")
        rename_contact(engine, contact.number, "Local", "Version")
        return f"{contact.number} renamed at SendHub AND in the canonical book (policy `local` keeps the canonical one)"

    def block() -> str:
        contact = list(account.contacts.values())[3]
        account.block(contact.number)
        return f"{contact.number} texted STOP at SendHub (blocked)"

    return [("Run 1: first sync — SendHub's contacts and both sides' groups merged", None),
            ("Run 2: an edit made at SendHub", edit_at_sendhub),
            ("Run 3: contacts added with plain SQL", add_by_sql),
            ("Run 4: a deletion at SendHub", delete_at_sendhub),
            ("Run 5: the same contact changed on both sides", conflict),
            ("Run 6: an opt-out at SendHub", block),
            ("Run 7: nothing changed — nothing to do", None)]


def _run(config: Config, engine: Engine, title: str) -> bool:
    from syncd.cli.commands import print_summary
    from syncd.cli.views import render_table
    from syncd.sync.run import run_once

    click.echo(f"\n=== {title}")
    report = asyncio.run(run_once(config, engine))
    print_summary(report)
    rows = run_changes(engine, report.run_id)
    if rows:
        shown = rows[:25]
        click.echo(render_table(["provider", "dir", "action", "entity", "canonical", "remote", "status", "reason / error"],
                                [[r.provider, r.direction, r.action, r.entity, r.canonical_id, r.remote_id, r.status,
                                  r.error or r.reason] for r in shown], max_width=70))
        if len(rows) > len(shown):
            click.echo(f"… and {len(rows) - len(shown)} more change-log rows")
    return report.failed
