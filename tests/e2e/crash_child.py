"""A fork server for the crash-safety scenario: imports syncd once, then forks one CLI run per request.

A fresh ``python -m syncd`` spends over a second importing before it does
anything; the crash test starts two dozen runs, so this process pays that once
and forks each run from the warm interpreter. Each child runs
``syncd --config … ARGS`` exactly as the console script does (``syncd.cli.cli``),
its output appended to a log file. This process is the children's parent, so
it alone signals and reaps them: a pid it kills is never one already reused.

Protocol, one JSON object per line on stdin, one answer per line on stdout:

* ``{"op": "run", "argv": [...], "log": PATH}`` → ``{"pid": PID}`` (one run at a time)
* ``{"op": "poll"}`` → ``{"running": bool}``
* ``{"op": "kill"}`` → ``{"status": CODE}`` after a SIGKILL (when still running) and
  reaping; ``CODE`` as ``subprocess`` reports it: the exit code, or ``-9`` when killed.

End of stdin ends the server (killing a run still going).

Run as ``python -m tests.e2e.crash_child``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

# Everything a `syncd sync` imports lazily, imported here once so that the children start warm.
import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401
import sqlalchemy.dialects.sqlite  # noqa: F401

import syncd.cli.commands  # noqa: F401
import syncd.config  # noqa: F401
import syncd.db.leases  # noqa: F401
import syncd.db.migrate  # noqa: F401
import syncd.logs  # noqa: F401
import syncd.providers.sendhub  # noqa: F401
import syncd.providers.smsend  # noqa: F401
import syncd.sync.run  # noqa: F401
from syncd.cli import cli


def run_child(argv: list[str], log: str) -> None:
    """In the forked child: the CLI with ``argv``, output to ``log``; never returns."""
    code = 70
    try:
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        try:
            cli.main(args=argv, prog_name="syncd")
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Server:
    def __init__(self) -> None:
        self.pid: int | None = None
        self.status: int | None = None

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "run":
            return self.run(request["argv"], request["log"])
        if op == "poll":
            return {"running": self.running()}
        if op == "kill":
            return {"status": self.kill()}
        raise ValueError(f"unknown op {op!r}")

    def run(self, argv: list[str], log: str) -> dict[str, Any]:
        if self.running():
            raise RuntimeError("a run is still going")
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            run_child(argv, log)
        self.pid, self.status = pid, None
        return {"pid": pid}

    def running(self) -> bool:
        """Reaps the child once it has exited (keeping its status)."""
        if self.pid is None or self.status is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self.status = os.waitstatus_to_exitcode(status)
        return False

    def kill(self) -> int | None:
        if self.running():
            os.kill(self.pid, signal.SIGKILL)  # not reaped yet, so the pid is still this child's
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
        return self.status


def main() -> None:
    server = Server()
    try:
        for line in sys.stdin:
            try:
                answer = server.handle(json.loads(line))
            except Exception as error:  # noqa: BLE001 - reported to the test, which fails with it
                answer = {"error": repr(error)}
            print(json.dumps(answer), flush=True)
    finally:
        server.kill()


if __name__ == "__main__":
    main()
