"""The Ansible content passes ansible-lint's production profile with no network (make ansible-test applies it for
real to a booted target; this is the quick check that runs with every `make test`)."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import ANSIBLE_BIN, ROOT

pytestmark = pytest.mark.e2e


def test_ansible_lint_production_profile_offline():
    linted = subprocess.run([str(ANSIBLE_BIN / "ansible-lint"), "--offline", "--profile", "production"],
                            capture_output=True, text=True, cwd=ROOT / "ansible", timeout=300,
                            env={**os.environ, "PATH": f"{ANSIBLE_BIN}:{os.environ['PATH']}", "NO_COLOR": "1"})
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_both_example_inventories_parse_with_the_playbooks():
    for inventory in ("single", "cluster"):
        checked = subprocess.run([str(ANSIBLE_BIN / "ansible-playbook"), "--syntax-check", "-i",
                                  f"inventories/{inventory}", "site.yml", "verify.yml"],
                                 capture_output=True, text=True, cwd=ROOT / "ansible", timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr
