"""``syncd deletes``: the deletions a ``deletes = "approve"`` provider holds, and the operator's decisions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from syncd.cli.views import render_table

if TYPE_CHECKING:
    from syncd.cli.app import AppContext

__all__ = ["decide_deletes", "show_deletes"]


def show_deletes(app: AppContext, *, provider: str | None, as_json: bool) -> None:
    """The pending deletes, oldest first: where each would happen and the record's last version."""
    from syncd.db.pending import pending_deletes

    if provider:
        app.check_provider_names([provider])
    waiting = pending_deletes(app.engine(), provider)
    if as_json:
        click.echo(json.dumps([p.to_json() for p in waiting], ensure_ascii=False, default=str))
        return
    if not waiting:
        click.echo("No deletion is waiting for approval.")
        return
    click.echo(render_table(
        ["id", "at", "provider", "deletes from", "entity", "canonical", "remote", "last version", "reason"],
        [[p.id, p.at.strftime("%Y-%m-%d %H:%M:%S"), p.provider, "the book" if p.direction == "inbound" else p.provider,
          p.entity, p.canonical_id, p.remote_id, p.last_version, p.reason] for p in waiting]))
    click.echo("\nSettle them with `syncd deletes approve ID…` or `syncd deletes reject ID…` (--all for every one).")


def decide_deletes(app: AppContext, ids: Sequence[int], *, every: bool, provider: str | None, approve: bool) -> int:
    """Approve or reject the pending deletes named (or ``every`` one, of ``provider`` if given)."""
    from syncd.db.pending import NotPending, decide

    if bool(ids) == every:
        raise click.UsageError("name the pending deletes (IDs) or pass --all, not both")
    if ids and provider:
        raise click.UsageError("--provider narrows --all; IDs already name their provider")
    if provider:
        app.check_provider_names([provider])
    try:
        decided = decide(app.engine(), None if every else ids, approve=approve, provider=provider)
    except NotPending as err:
        raise click.BadParameter(str(err), param_hint="ID") from err
    if not decided:
        click.echo("No deletion is waiting for approval.")
        return 0
    many = len(decided) > 1
    outcome = (f"approved: the next run carries {'them' if many else 'it'} out" if approve else
               f"rejected: the next run restores {'the records' if many else 'the record'}")
    click.echo(f"{len(decided)} deletion{'s' if many else ''} {outcome} (change {', '.join(map(str, decided))}).")
    return 0
