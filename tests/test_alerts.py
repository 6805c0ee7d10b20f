"""The monitoring role's alert rules, rendered from the role's template with its defaults and checked by the real
`promtool`: they parse, and each fires on the series it is for and stays quiet on a healthy appliance."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from conftest import ROOT

ROLE = ROOT / "ansible" / "roles" / "aftercall_monitoring"
INSTANCE = 'instance="appliance1:9464",job="aftercall"'

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="Debian prometheus (promtool) not installed (make test installs it)")


def _render(**overrides) -> str:
    variables = {**yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()), **overrides,
                 "ansible_managed": "Ansible managed"}
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        (ROLE / "templates" / "aftercall-alerts.yml.j2").read_text())
    return template.render(**variables)


def _latency_series(bucket_counts: dict[str, int]) -> list[dict]:
    """A histogram's buckets growing by the given count per minute (calls stored at that latency or less)."""
    return [{"series": f'aftercall_pipeline_post_call_latency_seconds_bucket{{{INSTANCE},le="{le}"}}',
             "values": f"0+{per_minute}x60"} for le, per_minute in bucket_counts.items()]


def _promtool_test(tmp_path: Path, rules: str, input_series: list[dict], alerts: list[dict]) -> None:
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "alert_rule_test": alerts}]}))
    tested = subprocess.run(["promtool", "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _firing(rules: str, alert: str, at: str, labels: dict[str, str] | None, value: str = "") -> dict:
    """promtool's expectation: `alert` firing at `at` with these labels (None: not firing), its annotations as the
    rules write them for those labels and that value."""
    if labels is None:
        return {"eval_time": at, "alertname": alert, "exp_alerts": []}
    rule = next(r for group in yaml.safe_load(rules)["groups"] for r in group["rules"] if r.get("alert") == alert)
    annotations = {}
    for key, text in rule["annotations"].items():
        for name, label in labels.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", label)
        annotations[key] = text.replace("{{ $value }}", value)
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels,
                                                                  "exp_annotations": annotations}]}


def test_the_rules_pass_promtool_check(tmp_path: Path):
    rules = tmp_path / "aftercall-alerts.yml"
    rules.write_text(_render())
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = [rule["alert"] for group in yaml.safe_load(rules.read_text())["groups"] for rule in group["rules"]]
    assert names == ["AftercallPostCallLatencyHigh", "AftercallQueueBacklog", "AftercallCallsFailing",
                     "AftercallCrmDeadLetters", "AftercallDown"]


def test_slow_summaries_fire_the_latency_alert_and_quick_ones_do_not(tmp_path: Path):
    appliance = {"severity": "warning", "instance": "appliance1:9464"}
    rules = _render()
    # One call a minute, each stored 60-120 s after hang-up: p95 about 117 s, over the default 60 s.
    slow = _latency_series({"30": 0, "60": 0, "120": 1, "+Inf": 1})
    _promtool_test(tmp_path, rules, slow, [_firing(rules, "AftercallPostCallLatencyHigh", "5m", None),
                                           _firing(rules, "AftercallPostCallLatencyHigh", "50m", appliance)])
    quick = _latency_series({"1": 0, "2": 1, "30": 1, "60": 1, "120": 1, "+Inf": 1})
    _promtool_test(tmp_path, rules, quick, [_firing(rules, "AftercallPostCallLatencyHigh", "50m", None)])
    # A site's own target: the same quick calls breach a 1.5 s service level.
    strict = _render(aftercall_monitoring_alert_post_call_p95_seconds=1.5)
    _promtool_test(tmp_path, strict, quick, [_firing(strict, "AftercallPostCallLatencyHigh", "50m", appliance)])


def test_a_backlog_that_lasts_fires_and_a_burst_does_not(tmp_path: Path):
    rules, queue = _render(), f"aftercall_pipeline_queue_depth{{{INSTANCE}}}"
    appliance = {"severity": "warning", "instance": "appliance1:9464", "job": "aftercall"}
    _promtool_test(tmp_path, rules, [{"series": queue, "values": "0 5 25x30"}],
                   [_firing(rules, "AftercallQueueBacklog", "20m", appliance, value="25")])
    _promtool_test(tmp_path, rules, [{"series": queue, "values": "0 25 25 25 3x30"}],
                   [_firing(rules, "AftercallQueueBacklog", "20m", None)])


def test_a_failed_call_and_a_silent_appliance_fire_at_once_or_soon(tmp_path: Path):
    rules = _render()
    appliance = {"severity": "critical", "instance": "appliance1:9464", "job": "aftercall"}
    series = [{"series": f'aftercall_pipeline_calls_failed_total{{{INSTANCE},stage="asr"}}', "values": "0 0 1 1 1"},
              {"series": f"up{{{INSTANCE}}}", "values": "1 1 0 0 0 0 0"}]
    _promtool_test(tmp_path, rules, series, [
        _firing(rules, "AftercallCallsFailing", "1m", None),
        _firing(rules, "AftercallCallsFailing", "3m", {**appliance, "stage": "asr"}),
        _firing(rules, "AftercallDown", "3m", None),
        _firing(rules, "AftercallDown", "5m", appliance)])


def test_crm_dead_letters_fire_until_they_are_retried(tmp_path: Path):
    rules, dead = _render(), f'aftercall_crm_outbox_events{{{INSTANCE},state="dead"}}'
    appliance = {"severity": "warning", "instance": "appliance1:9464", "job": "aftercall", "state": "dead"}
    _promtool_test(tmp_path, rules, [{"series": dead, "values": "0 0 2x10 0x10"}], [
        _firing(rules, "AftercallCrmDeadLetters", "3m", None),
        _firing(rules, "AftercallCrmDeadLetters", "9m", appliance, value="2"),
        _firing(rules, "AftercallCrmDeadLetters", "20m", None)])
