"""The systemd units in deploy/systemd: valid (systemd-analyze verify, no warnings), hardened (its offline security
score), and stopping later than the service's own grace period."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aftercall.core.config import ServerConfig
from conftest import ROOT

UNITS = ROOT / "deploy" / "systemd"
SERVICES = sorted(p.name for p in UNITS.glob("*.service"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The units as the provisioning installs them, with ExecStart pointing at this environment's aftercall (verify
    checks that the program exists)."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (make test installs Debian's systemd)")
    target = tmp_path_factory.mktemp("units")
    shutil.copytree(UNITS, target, dirs_exist_ok=True)
    here = str(Path(sys.executable).parent / "aftercall")
    for unit in target.glob("*.service"):
        unit.write_text(unit.read_text().replace("/opt/aftercall/current/venv/bin/aftercall", here))
    return target


def _analyze(units: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, cwd=units,
                          env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})


def test_every_unit_verifies_without_a_warning(installed):
    result = _analyze(installed, "verify", *SERVICES, "aftercall-retention.timer")
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_hardened(installed, service):
    result = _analyze(installed, "security", "--offline=true", service)
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout).group(1))
    assert exposure <= 2.0, result.stdout  # systemd calls 0-2 "OK"; a unit without the drop-in scores about 9


def test_services_stop_after_the_grace_period_they_give_calls():
    grace = ServerConfig().shutdown_grace_s
    for service in ("aftercall-server.service", "aftercall-asr.service", "aftercall-triton.service",
                    "aftercall-siprec.service"):
        stop = float(re.search(r"TimeoutStopSec=(\d+)", (UNITS / service).read_text()).group(1))
        assert stop > grace, service
