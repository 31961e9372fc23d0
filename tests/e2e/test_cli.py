"""The engine commands through the real CLI: sync, plan --detailed-exitcode, status, log --json."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from syncd.cli import cli
from syncd.simulators import Faults, start_simulator


def write_config(tmp_path, smsend, sendhub) -> str:
    sm, sh = smsend.credentials, sendhub.credentials
    path = tmp_path / "config.toml"
    path.write_text(f"""
[database]
url = "sqlite:///{tmp_path / 'syncd.db'}"
[sync]
default_region = "US"
[[providers]]
name = "smsend"
type = "smsend"
base_url = "{smsend.base_url}"
user_key = "{sm['user_key']}"
access_token = "{sm['access_token']}"
requests_per_second = 500
[[providers]]
name = "sendhub"
type = "sendhub"
base_url = "{sendhub.base_url}"
username = "{sh['username']}"
api_key = {{ env = "TEST_SENDHUB_KEY" }}
requests_per_second = 500
""")
    return str(path)


def test_plan_sync_status_log(tmp_path, monkeypatch):
    with start_simulator("smsend", faults=Faults()) as smsend, \
         start_simulator("sendhub", contacts=5, groups=2, seed=3, faults=Faults()) as sendhub:
        monkeypatch.setenv("TEST_SENDHUB_KEY", sendhub.credentials["api_key"])
        config = write_config(tmp_path, smsend, sendhub)
        runner = CliRunner()
        planned = runner.invoke(cli, ["--config", config, "plan", "--detailed-exitcode"])
        assert planned.exit_code == 3, planned.output
        assert "new at sendhub, absent locally" in planned.output
        assert smsend.state.snapshot()["contacts"] == []  # plan changed nothing anywhere
        synced = runner.invoke(cli, ["--config", config, "sync"])
        assert synced.exit_code == 0, synced.output
        assert "sendhub" in synced.output and "created_in" in synced.output
        assert len(smsend.state.snapshot()["contacts"]) == 5
        again = runner.invoke(cli, ["--config", config, "plan", "--detailed-exitcode"])
        assert again.exit_code == 0 and "Nothing to do" in again.output
        status = runner.invoke(cli, ["--config", config, "status"])
        assert status.exit_code == 0 and "ok" in status.output
        log = runner.invoke(cli, ["--config", config, "log", "--json", "--limit", "5"])
        rows = [json.loads(line) for line in log.output.splitlines()]
        assert len(rows) == 5 and all(r["status"] == "applied" for r in rows)
        assert sendhub.credentials["api_key"] not in synced.output + log.output + status.output
        unknown = runner.invoke(cli, ["--config", config, "sync", "--provider", "nope"])
        assert unknown.exit_code == 2 and "unknown provider" in unknown.output


def test_sync_of_a_disabled_provider_syncs_nothing(tmp_path, monkeypatch):
    """Naming only disabled accounts runs none: once this ran every enabled account, and without their leases."""
    with start_simulator("smsend", faults=Faults()) as smsend, \
         start_simulator("sendhub", contacts=5, groups=2, seed=3, faults=Faults()) as sendhub:
        monkeypatch.setenv("TEST_SENDHUB_KEY", sendhub.credentials["api_key"])
        config = write_config(tmp_path, smsend, sendhub)
        path = Path(config)
        path.write_text(path.read_text().replace('name = "smsend"', 'name = "smsend"\nenabled = false'))
        runner = CliRunner()
        synced = runner.invoke(cli, ["--config", config, "sync", "--provider", "smsend"])
        assert synced.exit_code == 0, synced.output
        assert "Nothing to sync: smsend is disabled" in synced.output
        exported = runner.invoke(cli, ["--config", config, "export", str(tmp_path / "book.csv")])
        assert exported.exit_code == 0 and "exported 0 contacts" in exported.output  # SendHub was not pulled


def test_errors_end_as_one_line_and_an_exit_code(tmp_path, monkeypatch):
    """Config 2, schema 2, syncd's own errors 1, a bug 1 with its traceback only in the log."""
    runner = CliRunner()
    broken = tmp_path / "broken.toml"
    broken.write_text("[database\n")
    result = runner.invoke(cli, ["--config", str(broken), "status"])
    assert result.exit_code == 2 and "broken.toml" in result.output and "Traceback" not in result.output

    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "syncd.db"}"\n')
    result = runner.invoke(cli, ["--config", str(config), "resolve", "7", "--keep", "local"])
    assert result.exit_code == 1 and "error: change 7 is not a conflict" in result.output

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("syncd.cli.views.show_status", crash)
    result = runner.invoke(cli, ["--config", str(config), "status"])
    assert result.exit_code == 1
    assert "error: internal error (RuntimeError); the log above has the details" in result.output
    assert "cli.crashed" in result.output and "Traceback" in result.output  # the log line, on stderr
