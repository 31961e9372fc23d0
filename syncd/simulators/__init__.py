"""Faithful in-memory simulators of the provider APIs, served over real HTTP (design §6).

* :mod:`syncd.simulators.sendhub` and :mod:`syncd.simulators.smsend`: one Starlette
  app per provider; each exposes ``build(...) -> (app, state, credentials)``.
* :mod:`syncd.simulators.faults`: the shared fault layer (latency, 5xx, 429/420,
  failing pages, dropped connections, malformed bodies, rejected credentials),
  request counting and the ``/_admin/...`` control interface.
* :mod:`syncd.simulators.server`: :func:`start_simulator` (background thread, for
  tests) and :func:`serve_forever` (foreground, for ``syncd simulate``).

The simulators share no code with the provider clients (no ``syncd.phones``,
``syncd.providers`` or ``syncd.model``): each side reads the provider documents
on its own, so a misreading on one side is caught by the other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Faults", "SimulatorServer", "serve_forever", "start_simulator"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m syncd.simulators.server` does not find its module already imported.
    if name == "Faults":
        from syncd.simulators.faults import Faults

        return Faults
    if name in {"SimulatorServer", "serve_forever", "start_simulator"}:
        from syncd.simulators import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
