"""sd_notify over the datagram protocol: path and abstract sockets, watchdog settings, failures ignored."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.notify import STATUS_MAX, Notifier, watchdog_interval


@pytest.fixture
def path_socket() -> Iterator[tuple[str, socket.socket]]:
    # A short directory: a socket path must fit in 108 bytes, pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="sdn") as directory:
        path = str(Path(directory) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(2)
        yield path, sock
        sock.close()


def test_messages_reach_a_path_socket(path_socket):
    path, sock = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.ready() and notifier.status("last run #3 ok\n  sendhub: ok") and notifier.watchdog()
    assert notifier.stopping()
    received = [sock.recv(4096).decode() for _ in range(4)]
    assert received == ["READY=1", "STATUS=last run #3 ok sendhub: ok", "WATCHDOG=1", "STOPPING=1"]


def test_messages_reach_an_abstract_socket():
    name = f"syncd-notify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = Notifier("@" + name)
        assert notifier.reloading()
        reloading, monotonic = sock.recv(4096).decode().splitlines()
        assert reloading == "RELOADING=1" and monotonic.startswith("MONOTONIC_USEC=")
    

def test_long_status_is_cut(path_socket):
    path, sock = path_socket
    Notifier(path).status("x" * 5000)
    assert len(sock.recv(8192).decode()) == len("STATUS=") + STATUS_MAX


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier.from_env({})
    assert not notifier.enabled and not notifier.ready()


def test_a_missing_socket_is_logged_not_raised():
    assert Notifier("/nonexistent/notify.sock").ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
