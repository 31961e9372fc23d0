"""The systemd units in deploy/: they verify, and their sandboxing rates an exposure of 2.0 or lower."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTALLED_BINARY = "/opt/syncd/bin/syncd"
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60)


def installed_copy(tmp_path: Path) -> list[Path]:
    """The units with ExecStart= pointing at this checkout's syncd (verify insists the binary exists)."""
    here = str(Path(sys.executable).with_name("syncd"))
    copies = []
    for unit in ("syncd.service", "syncd-oneshot.service", "syncd.timer"):
        copy = tmp_path / unit
        copy.write_text((DEPLOY / unit).read_text().replace(INSTALLED_BINARY, here))
        copies.append(copy)
    return copies


def test_units_verify(tmp_path):
    result = analyze("verify", *map(str, installed_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("unit", ["syncd.service", "syncd-oneshot.service"])
def test_exposure_is_at_most_two_and_the_quoted_figure_is_true(unit):
    result = analyze("security", "--offline=true", "--threshold=20", str(DEPLOY / unit))
    assert result.returncode == 0, result.stdout + result.stderr
    measured = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout).group(1)
    assert float(measured) <= 2.0
    assert f"{measured} OK" in (DEPLOY / unit).read_text(), f"the comment in {unit} quotes {measured}"
