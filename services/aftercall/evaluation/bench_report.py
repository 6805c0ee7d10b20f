"""`aftercall bench`'s figures as report sections (tables, plots, notes) and as the dated summary appended to
docs/benchmarks.md."""

from __future__ import annotations

import textwrap
from typing import Any

from aftercall.evaluation.bench_stages import STAGES
from aftercall.evaluation.report import Section, Table, figure_uri, markdown_table, new_figure

_STAGE_NAMES = {"decode": "decode", "asr": "ASR", "live": "live ASR", "redaction": "redaction",
                "summarisation": "summarisation", "recheck": "re-check", "vault_write": "vault write"}


def ratios(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ratio of the run, each from two figures measured in this same run."""
    rows = [{"ratio": f"aftercall pipeline / bare faster-whisper, {length['minutes']:g} min call, {measure}",
             "value": length[key]} for length in data.get("stages", ())
            for measure, key in (("wall time", "pipeline_over_bare"), ("CPU time", "cpu_over_bare"))]
    served = data.get("served", {})
    if served.get("levels") and served["levels"][0]["calls"] == 1 and served["levels"][0]["completed"]:
        lone = served["levels"][0]["p50_s"]
        rows += [{"ratio": f"served (1 call streamed in real time, post-call latency) / in-process pipeline, "
                           f"{served['call_seconds']:g} s call",
                  "value": round(lone / data["in_process"]["total_s"], 2)},
                 {"ratio": "`aftercall stream --realtime` / the benchmark's threads, 1 call (latency)",
                  "value": round(served["console_stream"]["post_call_latency_s"] / lone, 2)}]
    for live, after in _live_pairs(data):
        rows.append({"ratio": f"recognised after the call / during the call, post-call latency (p50), "
                              f"{live['minutes']:g} min call, 1 call",
                     "value": round(after["p50_s"] / live["p50_s"], 2)})
    if "triton" in data:
        rows += [{"ratio": "Triton / in-process summariser, latency", "value": data["triton"]["latency_ratio"]},
                 {"ratio": "Triton / in-process summariser, throughput (8 clients)",
                  "value": data["triton"]["throughput_ratio"]}]
    if "llm" in data:
        rows.append({"ratio": "LLM stand-in / embedded summariser (Triton), latency",
                     "value": data["llm"]["latency_ratio"]})
    for backend, figures in data.get("vault", {}).items():
        if "skipped" not in figures:
            rows += [{"ratio": f"encryption on / off, {backend} writes", "value": figures["write_ratio"]},
                     {"ratio": f"encryption on / off, {backend} reads", "value": figures["read_ratio"]}]
    return rows


def _live_pairs(data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Per call length, the lone call recognised during the call and the one recognised after it, both completed."""
    runs = [run for run in data.get("live", {}).get("runs", ())
            if run["calls"] == 1 and run["completed"] and run["ending"] == "goodbye"]
    return [(live, after) for live in runs if live["mode"] == "live"
            for after in runs if after["mode"] == "after_call" and after["minutes"] == live["minutes"]]


def _live_section(live: dict[str, Any]) -> Section:
    runs = live["runs"]
    figure = new_figure()
    axes = figure.subplots()
    for mode, calls in sorted({(run["mode"], run["calls"]) for run in runs}):
        points = [run for run in runs if run["mode"] == mode and run["calls"] == calls and run["completed"]
                  and run["ending"] == "goodbye"]
        label = f"{'during the call' if mode == 'live' else 'after the call'}, {calls} concurrent"
        axes.plot([run["minutes"] for run in points], [run["p95_s"] for run in points], marker="o", label=label)
    axes.set(xlabel="call length (min)", ylabel="post-call latency p95 (s)", yscale="log",
             title="Post-call latency against call length")
    axes.legend(fontsize="small")
    rows = [[run["mode"], run["minutes"], run["ending"], run["calls"], run["completed"], run["failed"],
             run["recognised"].get("fell_behind", 0), run.get("p50_s"), run.get("p95_s"), run.get("max_s"),
             run["server_cpu_s"], run["server_peak_rss_mib"]] for run in runs]
    return Section(
        "Post-call latency against call length: recognised during the call or after it",
        paragraphs=["Calls of each length streamed in real time through a real `aftercall serve` (100 ms chunks), "
                    "recognised while they last (the default) and, on a second server with "
                    "`ingest.max_live_calls = 0`, after they end. Post-call latency: from sending CallEnd to "
                    "receiving the stored summary. Each call ends as the demo call does (goodbyes, then 0.8 s of "
                    "silence before the hang-up); the `cut_off` call ends mid-sentence, so its last group of speech "
                    "is left to recognise after it. More than one concurrent: a busy hour, each line streaming "
                    "another call as soon as its call ends, the lines' first calls starting a call length / lines "
                    "apart; latency is that of the first calls, each ending while every other line is in a call. "
                    "Fell behind: calls of the level (the lines' next calls included) whose live recognition was "
                    "given up, the appliance having fallen behind, and which were recognised after they ended; the "
                    "most lines with none is the concurrency limit of live recognition."],
        tables=[Table(["recognised", "call (min)", "ending", "concurrent", "completed", "failed",
                       "fell behind (after the call)", "p50 (s)", "p95 (s)", "max (s)", "server CPU-s",
                       "server peak RSS (MiB)"], rows)],
        figures=[figure_uri(figure)])


def _stage_section(stages: list[dict[str, Any]]) -> Section:
    minutes = [f"{length['minutes']:g} min" for length in stages]
    figure = new_figure(9.0)
    # Left the time each call took; right the same per minute of audio, so that the lengths compare.
    for axes, per_minute in zip(figure.subplots(1, 2), (False, True)):
        bottom = [0.0] * len(stages)
        for stage in STAGES:
            seconds = [length["aftercall"]["stages_s"][stage] / (length["minutes"] if per_minute else 1)
                       for length in stages]
            axes.bar(minutes, seconds, bottom=bottom, label=_STAGE_NAMES[stage])
            bottom = [b + s for b, s in zip(bottom, seconds)]
        axes.set(xlabel="call length", ylabel="seconds per audio minute" if per_minute else "seconds",
                 title="Time per stage per audio minute" if per_minute else "Time per stage (stacked)")
    axes.legend(fontsize="small")
    rows = [[f"{length['minutes']:g}", *(length["aftercall"]["stages_s"][stage] for stage in STAGES),
             length["aftercall"]["total_s"], length["aftercall"]["rtf"], length["aftercall"]["cpu_s_per_audio_s"],
             length["aftercall"]["peak_rss_mib"], length["aftercall"]["words"],
             length["aftercall"]["redaction_s_per_1000_words"]] for length in stages]
    comparison = [[f"{length['minutes']:g}", length["bare_whisper"]["total_s"], length["aftercall"]["stages_s"]["asr"],
                   length["asr_over_bare"], length["aftercall"]["total_s"], length["pipeline_over_bare"],
                   length["bare_whisper"]["cpu_s_per_audio_s"], length["aftercall"]["cpu_s_per_audio_s"],
                   length["cpu_over_bare"],
                   length["bare_whisper"]["peak_rss_mib"], length["aftercall"]["peak_rss_mib"],
                   length["bare_whisper"]["words"], length["aftercall"]["words"]] for length in stages]
    return Section(
        "Stages per call length (in process)",
        paragraphs=["Calls are the demo call (stereo mu-law 8 kHz) repeated to length. Each length runs in a fresh "
                    "process with the models loaded first (a 10 s warm-up call): the stage times, CPU seconds (user + "
                    "system, all threads, stages only) and peak RSS (the whole process) are that length's alone. Bare "
                    "faster-whisper runs in a second fresh process: the same model directory, int8, beam size, VAD, "
                    "word timestamps, one thread per decode and the two channels in parallel, on the same 16 kHz "
                    "samples, with nothing of aftercall around it."],
        tables=[Table(["call (min)", *(f"{_STAGE_NAMES[s]} (s)" for s in STAGES), "total (s)", "RTF",
                       "CPU-s per audio-s", "peak RSS (MiB)", "words", "redaction (s per 1000 words)"], rows),
                Table(["call (min)", "bare ASR (s)", "aftercall ASR (s)", "ASR ratio", "aftercall total (s)",
                       "pipeline / bare", "bare CPU-s per audio-s", "aftercall CPU-s per audio-s", "CPU ratio",
                       "bare peak RSS (MiB)", "aftercall peak RSS (MiB)", "bare words", "aftercall words"],
                      comparison, "aftercall vs bare faster-whisper on the same audio")],
        figures=[figure_uri(figure)])


def _served_notes(data: dict[str, Any]) -> list[str]:
    served = data["served"]
    notes = []
    if "saturation" in served:
        sat = served["saturation"]
        if sat["saturated_at_calls"]:
            notes.append(f"Latency stops being flat at {sat['saturated_at_calls']} concurrent calls: p95 above "
                         f"{sat['flat_limit_p95_s']} s, twice the p50 of the lowest level "
                         f"({served['levels'][0]['calls']}).")
        else:
            notes.append(f"Latency stayed flat (p95 under {sat['flat_limit_p95_s']} s) up to "
                         f"{served['levels'][-1]['calls']} calls: the capacity below is a lower bound.")
        notes.append(f"Capacity, from the first hang-up to the last summary at {sat['capacity_measured_at_calls']} "
                     f"calls: {sat['capacity_x_real_time']}x real time, so about {sat['sustainable_realtime_calls']} "
                     "concurrent calls in real time can be kept up with; beyond that the queue, and post-call "
                     "latency, grow for as long as the load lasts.")
        busy = ", ".join(f"{_STAGE_NAMES.get(stage, stage)} {seconds} s"
                         for stage, seconds in sat["stage_busy_s"].items())
        notes.append(f"Bottleneck: {_STAGE_NAMES.get(sat['bottleneck_stage'], sat['bottleneck_stage'])}, "
                     f"{sat['bottleneck_share']:.0%} of the server's pipeline time ({busy}).")
    lone = next((level for level in served["levels"] if level["calls"] == 1 and level["completed"]), None)
    if lone:
        notes.append(f"One call through `aftercall stream --realtime` (the console script, a subprocess): "
                     f"{served['console_stream']['post_call_latency_s']} s after the end of the call, against "
                     f"{lone['p50_s']} s measured by the threads.")
        notes.append(f"In-process pipeline (same {served['call_seconds']:g} s call, fresh process, warm): "
                     f"{data['in_process']['total_s']} s; served path {lone['p50_s']} s.")
    stall = served["stalled_streams"]
    notes.append(f"{stall['streams']} streams that sent 1 s of audio and stalled: server RSS {stall['rss_before_mib']}"
                 f" -> {stall['rss_held_mib']} MiB ({stall['per_stream_kib']} KiB per open stream).")
    for level in served["levels"]:
        if level["errors"]:
            notes.append(f"{level['calls']} calls: {level['failed']} failed; first errors: "
                         + "; ".join(level["errors"]))
    return notes


def _concurrency_axis(axes, calls: list[int]) -> None:
    axes.set_xscale("log")
    axes.set_xticks(calls, [str(count) for count in calls])
    axes.minorticks_off()
    axes.set_xlabel("concurrent calls")


def _served_section(data: dict[str, Any]) -> Section:
    served = data["served"]
    levels = [level for level in served["levels"] if level["completed"]]
    calls = [level["calls"] for level in levels]
    latency = new_figure()
    axes = latency.subplots()
    for q in (50, 95, 99):
        axes.plot(calls, [level[f"p{q}_s"] for level in levels], marker="o", label=f"p{q}")
    _concurrency_axis(axes, calls)
    axes.set(yscale="log", ylabel="post-call latency (s)", title="Post-call latency vs concurrency")
    axes.legend()
    memory = new_figure()
    axes = memory.subplots()
    axes.plot(calls, [level["server_peak_rss_mib"] for level in levels], marker="o")
    _concurrency_axis(axes, calls)
    axes.set(ylabel="MiB", title="aftercall serve: peak RSS during the level")
    axes.set_ylim(bottom=0)
    rows = [[level["calls"], level["completed"], level["failed"], level.get("p50_s"), level.get("p95_s"),
             level.get("p99_s"), level.get("max_s"), level["wall_s"], level["throughput_audio_s_per_s"],
             level.get("drain_x_real_time"), level["server_peak_rss_mib"], level["server_cpu_s"],
             level["client_cpu_s"], level["stage_busy_s"].get("asr")] for level in served["levels"]]
    return Section(
        f"Concurrent calls streamed in real time through `aftercall serve` ({served['call_seconds']:g} s calls)",
        paragraphs=["A real `aftercall serve` subprocess (default config: one call summarised at a time, its two "
                    "channels decoded in parallel). Each call is streamed by the reference client at real-time pace "
                    f"in 100 ms chunks; arrivals are spread evenly over {served['arrival_spread_s']:g} s. Post-call "
                    "latency: from sending CallEnd to receiving the stored summary. The client threads run on the "
                    "same machine (their CPU time is in the table). Drain: audio seconds over the time from the "
                    "first hang-up to the last summary."],
        tables=[Table(["calls", "completed", "failed", "p50 (s)", "p95 (s)", "p99 (s)", "max (s)", "wall (s)",
                       "audio-s per wall-s", "drain (x real time)", "server peak RSS (MiB)", "server CPU-s",
                       "client CPU-s", "server ASR busy (s)"], rows)],
        notes=_served_notes(data), figures=[figure_uri(latency), figure_uri(memory)])


def _triton_section(triton: dict[str, Any]) -> Section:
    metrics = triton["triton_metrics"]
    return Section(
        "Summarisation: Triton vs in process",
        paragraphs=[f"The summarisation stage alone on the demo call's redacted transcript: {triton['requests_each']} "
                    f"requests one at a time, then {triton['requests_each']} from {triton['clients']} clients; a real "
                    "tritonserver (python backend, gRPC)."],
        tables=[Table(["path", "latency, one at a time (ms)", "throughput (/s)"],
                      [[name, triton[name]["latency_ms"], triton[name]["throughput_per_s"]]
                       for name in ("in_process", "triton")])],
        notes=[f"Triton's metrics: {metrics['requests']:.0f} requests in {metrics['executions']:.0f} executions (mean "
               f"batch {metrics['mean_batch']}), mean queue {metrics['mean_queue_ms']} ms, mean compute "
               f"{metrics['mean_compute_ms']} ms."])


def _llm_section(llm: dict[str, Any]) -> Section:
    return Section(
        "LLM summariser on its CPU stand-in",
        paragraphs=[f"call_summariser_llm (SmolLM2-135M on llama.cpp) against call_summariser, through Triton, on the "
                    f"{llm['calls']} regression calls (redacted), one at a time."],
        tables=[Table(["model", "mean (s)", "max (s)"], [[name, llm[name]["mean_s"], llm[name]["max_s"]]
                                                         for name in ("call_summariser", "call_summariser_llm")]),
                Table(["outcome", "calls"], list(llm["outcomes"].items()))])


def _vault_section(vault: dict[str, Any]) -> Section:
    rows, notes = [], []
    for backend, figures in vault.items():
        if "skipped" in figures:
            notes.append(f"{backend}: skipped ({figures['skipped']}).")
            continue
        rows += [[backend, "sealing off", figures["clear"]["writes_per_s"], figures["clear"]["reads_per_s"], None],
                 [backend, "envelope encryption + blind indexes", figures["sealed"]["writes_per_s"],
                  figures["sealed"]["reads_per_s"], figures["sealed"]["rotation_s_per_10k"]]]
    records = vault["sqlite"]["sealed"]["records"]
    return Section(
        "Vault: encryption on vs off",
        paragraphs=[f"{records} summaries of the demo call, each written with its version row and audit entry in one "
                    "transaction, then read by call id; the baseline is the same store and SQL with sealing and the "
                    "HMAC indexes switched off."],
        tables=[Table(["backend", "store", "writes/s", "reads/s", "key rotation (s per 10,000)"], rows)], notes=notes)


def _siprec_notes(siprec: dict[str, Any]) -> list[str]:
    if "skipped" in siprec:
        return [f"SIPREC part skipped: {siprec['skipped']}."]
    rtp = siprec["rtp"]
    notes = [f"{siprec['sipp_successful']} of {siprec['calls']} SIPREC calls completed in sipp, "
             f"{siprec['summaries']} summaries stored; {rtp['recorded']} of {siprec['rtp_packets_sent']} RTP packets "
             f"recorded ({rtp['late']} late, {rtp['duplicate']} duplicates, {siprec['rtp_lost_s']} s filled as lost).",
             f"While the calls were live the server used {siprec['live_server_cpu_s']} CPU-s in "
             f"{siprec['live_wall_s']} s ({siprec['live_server_cpu_share_of_one_core']:.0%} of one core, recognition "
             f"of calls that had ended included) and peaked at {siprec['live_server_peak_rss_mib']} MiB; the last "
             f"summary came {siprec['drain_after_last_call_s']} s after sipp finished."]
    if siprec["sipp_exit"]:
        notes.append(f"sipp exited with {siprec['sipp_exit']}: {siprec['sipp_errors']}")
    return notes


def _siprec_section(siprec: dict[str, Any]) -> Section:
    if "skipped" in siprec:
        return Section("SIPREC recording under load", notes=_siprec_notes(siprec))
    rtp = siprec["rtp"]
    return Section(
        f"SIPREC recording under load ({siprec['calls']} concurrent {siprec['call_seconds']:g} s calls)",
        paragraphs=["A real `aftercall serve ingest summaries siprec` subprocess. sipp (Debian's sip-tester) plays "
                    "the SBC: it starts every recording session within one second (INVITE with Require: siprec, "
                    "SDP + RFC 7865 metadata) and replays each call's two sides as RTP from a pcap at real-time "
                    "pace, then hangs up. Every recording goes through ingest into the pipeline like a streamed "
                    "call."],
        tables=[Table(["calls", "sipp completed", "summaries", "RTP sent", "RTP recorded", "late", "duplicates",
                       "lost (s)", "mean jitter (ms)", "server CPU-s live", "share of one core",
                       "peak RSS live (MiB)", "last summary after (s)"],
                      [[siprec["calls"], siprec["sipp_successful"], siprec["summaries"], siprec["rtp_packets_sent"],
                        rtp["recorded"], rtp["late"], rtp["duplicate"], siprec["rtp_lost_s"],
                        siprec["mean_jitter_ms"], siprec["live_server_cpu_s"],
                        siprec["live_server_cpu_share_of_one_core"], siprec["live_server_peak_rss_mib"],
                        siprec["drain_after_last_call_s"]]])],
        notes=_siprec_notes(siprec))


def sections(data: dict[str, Any]) -> list[Section]:
    parts = [Section("Ratios measured in this run", tables=[Table(["ratio", "value"], [
        [row["ratio"], row["value"]] for row in data["ratios"]])])]
    if "stages" in data:
        parts.append(_stage_section(data["stages"]))
    if "served" in data:
        parts.append(_served_section(data))
    if "live" in data:
        parts.append(_live_section(data["live"]))
    if "triton" in data:
        parts.append(_triton_section(data["triton"]))
    if "llm" in data:
        parts.append(_llm_section(data["llm"]))
    if "vault" in data:
        parts.append(_vault_section(data["vault"]))
    if "siprec" in data:
        parts.append(_siprec_section(data["siprec"]))
    return parts


def _bullets(notes: list[str]) -> list[str]:
    return [textwrap.fill(note, 118, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)
            for note in notes] + [""]


def markdown_summary(data: dict[str, Any], meta: dict[str, Any]) -> str:
    """A short dated summary: per call length, per concurrency level, and every ratio."""
    lines = ["", f"### `aftercall bench`, {meta['date'][:10]} ({meta['cores']} cores {meta['cpu']}, "
                 f"{meta['memory_gib']} GiB; {meta['duration_s'] // 60} min; load average "
                 f"{meta['load_average_at_start']} at the start, {meta['load_average_at_end']} at the end)", ""]
    if "stages" in data:
        lines += [markdown_table(Table(["call (min)", "total (s)", "ASR (s)", "RTF", "CPU-s per audio-s",
                                        "peak RSS (MiB)", "bare faster-whisper (s)", "pipeline / bare (wall)",
                                        "pipeline / bare (CPU)", "redaction (s)", "redaction (s per 1000 words)"], [
            [f"{length['minutes']:g}", length["aftercall"]["total_s"], length["aftercall"]["stages_s"]["asr"],
             length["aftercall"]["rtf"], length["aftercall"]["cpu_s_per_audio_s"], length["aftercall"]["peak_rss_mib"],
             length["bare_whisper"]["total_s"], length["pipeline_over_bare"], length["cpu_over_bare"],
             length["aftercall"]["stages_s"]["redaction"], length["aftercall"]["redaction_s_per_1000_words"]]
            for length in data["stages"]])), ""]
    if "served" in data:
        served = data["served"]
        lines += [markdown_table(Table([f"concurrent {served['call_seconds']:g} s calls", "p50 (s)", "p95 (s)",
                                        "p99 (s)", "failed", "drain (x real time)", "server peak RSS (MiB)"], [
            [level["calls"], level.get("p50_s"), level.get("p95_s"), level.get("p99_s"), level["failed"],
             level.get("drain_x_real_time"), level["server_peak_rss_mib"]] for level in served["levels"]])), ""]
        lines += _bullets(_served_notes(data)[:3])
    if "live" in data:
        lines += [markdown_table(Table(["recognised", "call (min)", "ending", "concurrent", "p50 (s)", "p95 (s)",
                                        "failed", "fell behind"], [
            [run["mode"], run["minutes"], run["ending"], run["calls"], run.get("p50_s"), run.get("p95_s"),
             run["failed"], run["recognised"].get("fell_behind", 0)] for run in data["live"]["runs"]])), ""]
    if "siprec" in data:
        lines += _bullets(_siprec_notes(data["siprec"]))
    if data["ratios"]:
        lines += [markdown_table(Table(["ratio (one run)", "value"], [[row["ratio"], row["value"]]
                                                                      for row in data["ratios"]])), ""]
    return "\n".join(lines)
