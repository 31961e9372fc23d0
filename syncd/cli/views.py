"""Read-only views of the database for `syncd status` and `syncd log`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from syncd.db.models import ChangeLogRow, PullStateRow, SyncRunRow
from syncd.db.repo import latest_outbound_ids

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncd.config import Config

__all__ = ["render_table", "show_log", "show_status"]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 60) -> str:
    """A plain-text table with columns padded to their widest cell."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _cell(value: Any, max_width: int) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = " ".join(str(value).split())
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def show_log(engine: Engine, *, provider: str | None, run_id: int | None, limit: int, as_json: bool) -> None:
    query = select(ChangeLogRow).order_by(ChangeLogRow.id.desc()).limit(limit)
    if provider:
        query = query.where(ChangeLogRow.provider == provider)
    if run_id is not None:
        query = query.where(ChangeLogRow.run_id == run_id)
    with Session(engine) as session:
        rows = session.scalars(query).all()
    if as_json:
        for row in rows:
            click.echo(json.dumps(_log_dict(row), ensure_ascii=False, default=str))
        return
    if not rows:
        click.echo("The change log is empty." if not (provider or run_id) else "No change-log rows match.")
        return
    click.echo(render_table(
        ["id", "run", "at", "provider", "entity", "action", "dir", "canonical", "remote", "status", "reason / error"],
        [[r.id, r.run_id, r.at.strftime("%Y-%m-%d %H:%M:%S"), r.provider, r.entity, r.action, r.direction,
          r.canonical_id, r.remote_id, r.status, r.error or r.reason] for r in rows]))


def _log_dict(row: ChangeLogRow) -> dict[str, Any]:
    keys = ("id", "run_id", "at", "provider", "entity", "action", "direction", "canonical_id", "remote_id",
            "status", "before", "after", "error", "reason", "attempts")
    return {k: getattr(row, k) for k in keys}


def show_status(engine: Engine, config: Config) -> None:
    with Session(engine) as session:
        last = session.scalars(select(SyncRunRow).order_by(SyncRunRow.id.desc()).limit(1)).first()
        if last is None:
            click.echo("No sync run yet. Run `syncd sync` (or start `syncd run`).")
        pulls = {p.provider: p for p in session.scalars(select(PullStateRow))}
        rows = []
        for provider in config.providers:
            summary = (last.summary or {}).get("providers", {}).get(provider.name, {}) if last else {}
            pull = pulls.get(provider.name)
            rows.append([provider.name, provider.type, provider.mode,
                         summary.get("status", "never run" if last else ""),
                         _counts(summary), "yes" if pull and pull.complete else ("no" if pull else ""),
                         summary.get("error", "")])
        click.echo(render_table(["provider", "type", "mode", "last result", "counts", "pull complete", "error"], rows))
        if last is not None:
            next_run = last.started_at + timedelta(seconds=config.schedule.interval_seconds)
            click.echo(f"\nLast run #{last.id} ({last.trigger}) started {last.started_at:%Y-%m-%d %H:%M:%S} UTC, "
                       f"status {last.status}. Next scheduled run (when `syncd run` is up): {next_run:%Y-%m-%d %H:%M:%S} UTC.")
        _show_open_problems(session)


def _counts(summary: dict[str, Any]) -> str:
    keys = ("pulled", "created_in", "updated_in", "deleted_in", "created_out", "updated_out", "deleted_out",
            "conflicts", "rejected", "failed")
    return " ".join(f"{k}={summary[k]}" for k in keys if summary.get(k))


def _show_open_problems(session: Session) -> None:
    """Records still failed or rejected (their latest change-log row), and held conflicts."""
    latest = latest_outbound_ids()
    problems = session.scalars(select(ChangeLogRow).where(ChangeLogRow.id.in_(latest),
                                                           ChangeLogRow.status.in_(("failed", "rejected")))
                               .order_by(ChangeLogRow.id.desc()).limit(100)).all()
    held = session.scalars(select(ChangeLogRow).where(ChangeLogRow.action == "conflict",
                                                       ChangeLogRow.status == "planned",
                                                       ChangeLogRow.resolved_at.is_(None))
                           .order_by(ChangeLogRow.id.desc()).limit(100)).all()
    if problems:
        click.echo("\nFailed or rejected records:")
        click.echo(render_table(["change", "provider", "entity", "action", "canonical", "remote", "status", "attempts", "error"],
                                [[r.id, r.provider, r.entity, r.action, r.canonical_id, r.remote_id, r.status,
                                  r.attempts, r.error] for r in problems], max_width=80))
    if held:
        click.echo("\nConflicts waiting for `syncd resolve CHANGE_ID --keep local|remote`:")
        click.echo(render_table(["change", "provider", "entity", "canonical", "remote", "reason"],
                                [[r.id, r.provider, r.entity, r.canonical_id, r.remote_id, r.reason] for r in held], max_width=80))
    if not problems and not held:
        click.echo("\nNo failed, rejected or held records.")
