"""One leased run: claim the leases of the chosen accounts, run the engine on those claimed, release them.

``syncd sync`` and every scheduled run of the daemon go through
:func:`run_leased`, so the rule "a run never syncs an account another replica
is syncing" (design §7) is written once.

Why a module of its own, at the top of the package: the sequence needs both
the leases (:mod:`syncd.db.leases`) and the engine (:mod:`syncd.sync.run`).
``db`` must not import ``sync``, and ``sync`` knows nothing of leases (a run
only receives their fences), so neither can hold it; the CLI and the daemon
both call it, and it imports neither of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from sqlalchemy import Engine

from syncd.config import Config
from syncd.db.leases import Busy, LeaseManager
from syncd.sync.progress import Progress
from syncd.sync.run import RunReport, run_once

__all__ = ["LeasedRun", "RunCoroutine", "RunSettings", "enabled_accounts", "run_leased"]

RunCoroutine = Coroutine[Any, Any, RunReport]


class RunSettings(TypedDict, total=False):
    """The :func:`~syncd.sync.run.run_once` options a leased run passes on as they are.

    ``only`` and ``fence_for`` are not among them: they come from the leases claimed.
    """

    trigger: str
    allow_mass_delete: bool
    full: bool
    client_options: Mapping[str, Mapping[str, Any]] | None
    stopping: Callable[[], bool]


@dataclass(frozen=True, slots=True)
class LeasedRun:
    """What a leased run did: its report (None when it did not start), and the accounts skipped as busy."""

    report: RunReport | None
    busy: list[Busy]


def enabled_accounts(config: Config, only: Collection[str] = ()) -> list[str]:
    """The names of the enabled accounts, in configuration order; only those in ``only`` unless it is empty."""
    return [p.name for p in config.providers if p.enabled and (not only or p.name in only)]


def _no_progress() -> Progress | None:
    return None


def _never() -> bool:
    return False


def run_leased(config: Config, engine: Engine, leases: LeaseManager, accounts: Collection[str], *,
               on_busy: Callable[[Busy], None], start: Callable[[RunCoroutine], RunReport] = asyncio.run,
               progress: Callable[[], Progress | None] = _no_progress, **settings: Unpack[RunSettings]) -> LeasedRun:
    """Claim the leases of ``accounts``, run the engine on the accounts claimed, and release the leases.

    ``on_busy`` hears of each account another live replica holds, before the
    run starts; the run skips them. Nothing runs when no lease was claimed
    (an empty ``accounts`` included: the engine would take "no account named"
    as "every account"), nor when ``settings["stopping"]`` already says stop.
    ``start`` drives the run's coroutine to its end (the daemon's keeps a
    handle on it, to cancel it); ``progress`` is called only once the run
    starts, so a progress display is never opened for a run that does not
    happen. The leases are renewed while the run goes on and released
    whatever way it ends.
    """
    stopping = settings.get("stopping", _never)
    with leases.hold(accounts) as held:
        for busy in held.busy:
            on_busy(busy)
        if not held.claimed or stopping():
            return LeasedRun(None, held.busy)
        report = start(run_once(config, engine, only=held.claimed, fence_for=held.fence_for, progress=progress(),
                                **settings))
    return LeasedRun(report, held.busy)
