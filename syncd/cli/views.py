"""Read-only views of the database for `syncd status` and `syncd log`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from syncd.db.reports import StatusReport, change_log, status_report

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncd.config import Config
    from syncd.db.models import ChangeLogRow

__all__ = ["SUMMARY_KEYS", "render_table", "show_log", "show_status"]

#: The counts of a provider's run summary a person is shown, in this order.
SUMMARY_KEYS = ("pulled", "created_in", "updated_in", "deleted_in", "created_out", "updated_out", "deleted_out",
                "conflicts", "rejected", "failed")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 60) -> str:
    """A plain-text table with columns padded to their widest cell."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _cell(value: Any, max_width: int) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = " ".join(str(value).split())
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def show_log(engine: Engine, *, provider: str | None, run_id: int | None, limit: int, as_json: bool) -> None:
    """``syncd log``: the newest change-log rows, as a table or as JSON lines."""
    rows = change_log(engine, provider=provider, run_id=run_id, limit=limit)
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
    """``syncd status``: per provider the last run's result, then the records that want attention."""
    report = status_report(engine)
    last = report.last_run
    if last is None:
        click.echo("No sync run yet. Run `syncd sync` (or start `syncd run`).")
    rows = []
    for provider in config.providers:
        summary = (last.summary or {}).get("providers", {}).get(provider.name, {}) if last else {}
        pull = report.pulls.get(provider.name)
        rows.append([provider.name, provider.type, provider.mode,
                     summary.get("status", "never run" if last else ""),
                     _counts(summary), "yes" if pull and pull.complete else ("no" if pull else ""),
                     summary.get("error", "")])
    click.echo(render_table(["provider", "type", "mode", "last result", "counts", "pull complete", "error"], rows))
    if last is not None:
        next_run = last.started_at + timedelta(seconds=config.schedule.interval_seconds)
        click.echo(f"\nLast run #{last.id} ({last.trigger}) started {last.started_at:%Y-%m-%d %H:%M:%S} UTC, "
                   f"status {last.status}. Next scheduled run (when `syncd run` is up): {next_run:%Y-%m-%d %H:%M:%S} UTC.")
    _show_open_problems(report)


def _counts(summary: dict[str, Any]) -> str:
    return " ".join(f"{k}={summary[k]}" for k in SUMMARY_KEYS if summary.get(k))


def _show_open_problems(report: StatusReport) -> None:
    """Records still failed or rejected (their latest change-log row), and held conflicts."""
    problems, held = report.problems, report.held
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
