"""Progress of a long run, as the engine reports it: a phase name and how much of it is done.

The engine only calls :class:`Progress`; what a person sees (a live line on a
terminal, or nothing at all) is the caller's choice (``syncd.cli`` shows it
with rich when stderr is a terminal).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "Silent"]


class Progress(Protocol):
    """Receives ``update(phase, done)`` as a run goes on, and ``close()`` at its end."""

    def update(self, phase: str, done: int) -> None:
        """``done`` items of ``phase`` (e.g. ``"sendhub: pull"``) are finished so far."""

    def close(self) -> None: ...


class Silent:
    """No progress shown (the daemon, tests, a stderr that is not a terminal)."""

    def update(self, phase: str, done: int) -> None:
        pass

    def close(self) -> None:
        pass
