"""`aftercall bench`: the smoke run through the console script checks that every part of the harness measures
something real. Figures are never asserted here: performance is measured by the benchmark, not by timed tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aftercall.evaluation.bench_stages import STAGES
from conftest import ROOT, run_cli

AFTERCALL = Path(sys.executable).with_name("aftercall")
DOCS = ROOT / "docs" / "benchmarks.md"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    docs_before = DOCS.read_text()
    done = subprocess.run([str(AFTERCALL), "bench", "--smoke", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert DOCS.read_text() == docs_before, "a smoke run must not append to docs/benchmarks.md"
    return json.loads((out / "bench.json").read_text()), (out / "bench.html").read_text(), done.stderr


@pytest.mark.e2e
def test_smoke_run_reports_every_part(smoke):
    data, html, stderr = smoke
    assert data["meta"]["mode"] == "smoke"
    assert data["skipped"] == ["llm", "postgres"]
    assert {"stages", "in_process", "served", "live", "triton", "vault", "siprec", "ratios"} <= data.keys()
    assert "bench: wrote" in stderr and "Traceback" not in stderr
    assert html.count("data:image/png;base64,") == 4  # stages, latency, memory, latency against call length
    for title in ("Ratios measured in this run", "Stages per call length", "Concurrent calls streamed",
                  "Post-call latency against call length",
                  "Summarisation: Triton vs in process", "Vault: encryption on vs off"):
        assert title in html


@pytest.mark.e2e
def test_every_stage_is_timed_against_bare_whisper(smoke):
    (length,) = smoke[0]["stages"]
    aftercall, bare = length["aftercall"], length["bare_whisper"]
    assert set(aftercall["stages_s"]) == set(STAGES)
    assert all(seconds > 0 for seconds in aftercall["stages_s"].values())
    for figures in (aftercall, bare):
        assert figures["rtf"] > 0 and figures["cpu_s"] > 0 and figures["peak_rss_mib"] > 100
        assert figures["words"] > 5  # both really transcribed the speech
    assert length["pipeline_over_bare"] > 0 and length["cpu_over_bare"] > 0
    assert aftercall["redaction_s_per_1000_words"] > 0


@pytest.mark.e2e
def test_served_levels_complete_every_call(smoke):
    served = smoke[0]["served"]
    assert [level["calls"] for level in served["levels"]] == [1, 2]
    for level in served["levels"]:
        assert level["failed"] == 0 and level["completed"] == level["calls"], level["errors"]
        assert 0 < level["p50_s"] <= level["p95_s"] <= level["p99_s"] <= level["max_s"]
        assert level["server_peak_rss_mib"] > 100 and level["server_cpu_s"] > 0
        assert level["stage_busy_s"]["asr"] > 0 and level["drain_x_real_time"] > 0
    assert served["console_stream"]["post_call_latency_s"] > 0
    assert served["saturation"]["bottleneck_stage"] in ("asr", "live")  # recognition, after or during the call
    assert served["stalled_streams"]["streams"] == 5


@pytest.mark.e2e
def test_post_call_latency_is_measured_against_call_length_live_and_after_the_call(smoke):
    runs = smoke[0]["live"]["runs"]
    assert [(run["mode"], run["minutes"], run["calls"], run["ending"]) for run in runs] == [
        ("live", 0.2, 1, "goodbye"), ("live", 0.2, 2, "goodbye"), ("live", 0.2, 1, "cut_off"),
        ("after_call", 0.2, 1, "goodbye")]
    for run in runs:
        assert run["failed"] == 0 and run["completed"] == run["calls"], run["errors"]
        assert 0 < run["p50_s"] <= run["p95_s"] <= run["max_s"]


@pytest.mark.e2e
def test_triton_vault_and_ratios_are_measured(smoke):
    data = smoke[0]
    triton = data["triton"]
    assert triton["in_process"]["latency_ms"] > 0 and triton["triton"]["latency_ms"] > 0
    assert triton["triton_metrics"]["requests"] >= 2 * triton["requests_each"]  # Triton itself counted them
    assert data["vault"]["sqlite"]["sealed"]["rotation_s_per_10k"] > 0
    assert "skipped" in data["vault"]["postgresql"]
    assert len(data["ratios"]) == 9 and all(row["value"] > 0 for row in data["ratios"])


@pytest.mark.parametrize("args, message", [
    (["--levels", "1,x"], "--levels takes comma-separated numbers"),
    (["--lengths", "0"], "--lengths takes positive numbers"),
    (["--skip", "stages,gpu"], "--skip: unknown part(s) gpu"),
    (["--call-seconds", "soon"], "--call-seconds: invalid float value"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    done = run_cli("bench", *args, "--no-docs", timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@pytest.mark.e2e
def test_siprec_calls_from_sipp_are_all_recorded(smoke):
    siprec = smoke[0]["siprec"]
    if "skipped" in siprec:
        pytest.skip(siprec["skipped"])
    assert siprec["sipp_exit"] == 0 and siprec["sipp_successful"] == siprec["summaries"] == 2
    assert siprec["rtp"]["recorded"] == siprec["rtp_packets_sent"] and siprec["rtp_lost_s"] == 0
    assert siprec["recordings_ended"] == {"bye": 2} and siprec["live_server_peak_rss_mib"] > 100
    assert "SIPREC recording under load" in smoke[1]
