"""`syncd run` as a process: systemd notifications, metrics, SIGTERM mid-push, SIGHUP with a broken config."""

from __future__ import annotations

import signal
import sqlite3
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.conftest import (
    phone,
    provider_toml,
    seed_contacts,
    sendhub_numbers,
    sql,
    wait_until,
    write_config,
)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the endpoint as {(name, sorted labels): value}, through the Prometheus text parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_notifies_systemd_serves_metrics_and_stops_on_sigterm(tmp_path, sqlite_url, smsend, sendhub, notify,
                                                               start_daemon):
    seed_contacts(sqlite_url, 5)
    config = write_config(tmp_path / "config.toml", sqlite_url, [provider_toml(smsend), provider_toml(sendhub)],
                          metrics="127.0.0.1:0")
    daemon = start_daemon(config, notify=notify, watchdog_usec=400_000)
    [listening] = daemon.wait_for("metrics.listening")
    daemon.wait_for("run.finished", count=2)
    wait_until(lambda: notify.count("WATCHDOG=1") >= 3, 5, "periodic WATCHDOG=1")
    lines = notify.lines()
    assert lines.index("READY=1") < lines.index("WATCHDOG=1")
    statuses = [line for line in lines if line.startswith("STATUS=last run #")]
    assert statuses and "smsend: ok" in statuses[-1] and "sendhub: ok" in statuses[-1]

    samples = scrape(listening["port"])
    assert samples[("syncd_runs_total", (("status", "ok"),))] >= 2
    created = (("action", "create"), ("entity", "contact"), ("provider", "sendhub"), ("status", "applied"))
    assert samples[("syncd_operations_total", created)] == 5
    assert samples[("syncd_provider_requests_total", (("provider", "sendhub"),))] >= 7  # 2 pulls + 5 creates
    assert ("syncd_provider_retries_total", (("provider", "smsend"),)) in samples
    assert samples[("syncd_last_success_timestamp_seconds", (("provider", "smsend"),))] > time.time() - 60
    assert samples[("syncd_run_duration_seconds_count", ())] >= 2

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert "STOPPING=1" in notify.lines()


def test_no_ready_when_the_schema_is_not_there(tmp_path, sendhub, notify, start_daemon):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:  # a database that is not syncd's: never created over
        conn.execute("CREATE TABLE unrelated (x)")
    config = write_config(tmp_path / "config.toml", f"sqlite:///{db}", [provider_toml(sendhub)])
    daemon = start_daemon(config, notify=notify)
    assert daemon.wait(15) == 2
    assert "syncd db upgrade" in daemon.log_path.read_text()
    assert "READY=1" not in notify.lines()


def test_sigterm_mid_push_exits_promptly_and_the_next_run_finishes_without_duplicates(
        tmp_path, sqlite_url, sendhub, start_daemon):
    total = 500
    seed_contacts(sqlite_url, total)
    sendhub.faults.latency = 0.01
    config = write_config(tmp_path / "config.toml", sqlite_url,
                          [provider_toml(sendhub, batch_size=20, max_concurrency=4)])
    first = start_daemon(config)
    wait_until(lambda: len(sendhub_numbers(sendhub)) >= 60, 20, "the push to be under way")
    first.signal(signal.SIGTERM)
    started = time.monotonic()
    assert first.wait(10) == 0
    assert time.monotonic() - started < 10
    pushed = len(sendhub_numbers(sendhub))
    assert 60 <= pushed < total, "stopped mid-push, not after it"
    assert sql(sqlite_url, "SELECT count(*) FROM sync_runs WHERE status = 'running'")[0][0] == 0

    second = start_daemon(config)
    second.wait_for("run.finished", timeout=60, where=lambda e: e["providers"]["sendhub"].get("created_out", 0) > 0)
    second.signal(signal.SIGTERM)
    assert second.wait(10) == 0
    numbers = sendhub_numbers(sendhub)
    assert set(numbers) == {phone(i) for i in range(total)}
    assert max(numbers.values()) == 1, "no duplicates at the provider"
    assert sql(sqlite_url, "SELECT count(*) FROM links WHERE provider = 'sendhub' AND entity = 'contact'")[0][0] == total
    assert sql(sqlite_url, "SELECT count(*) FROM change_log WHERE status = 'pending'")[0][0] == 0


def test_sighup_with_a_broken_config_keeps_the_old_one_and_says_why(tmp_path, sqlite_url, sendhub, notify,
                                                                    start_daemon):
    config = write_config(tmp_path / "config.toml", sqlite_url, [provider_toml(sendhub)])
    good = config.read_text()
    daemon = start_daemon(config, notify=notify)
    daemon.wait_for("run.finished")
    config.write_text(good.replace("interval_seconds = 1.0", "interval_seconds = -5\nbogus = 1"))
    daemon.signal(signal.SIGHUP)
    [failed] = daemon.wait_for("config.reload_failed")
    problems = " ".join(failed["problems"])
    assert "schedule.interval_seconds" in problems and "bogus" in problems
    finished = len(daemon.events("run.finished"))
    daemon.wait_for("run.finished", count=finished + 1)  # still running, on the old configuration
    assert "RELOADING=1" in notify.lines()

    config.write_text(good.replace("interval_seconds = 1.0", "interval_seconds = 2.5"))
    daemon.signal(signal.SIGHUP)
    [reloaded] = daemon.wait_for("config.reloaded")
    assert reloaded["interval_seconds"] == 2.5
    daemon.signal(signal.SIGINT)
    assert daemon.wait(10) == 0
