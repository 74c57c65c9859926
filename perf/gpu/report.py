"""The GPU run's table and targets."""

from __future__ import annotations

from perf.gpu import STEPS

PARITY_CONTRACT = {"gpu": 0.99, "cpu": 1.0}
# the GPU targets: model step windows/s (fp16), q/s with p99 <= 100 ms, x the pipeline (per call, batched),
# pre+post share of server time, seconds for the 140,000-character document
TARGETS = {
    "windows_per_s": 10_000,
    "qps": 6_000,
    "p99_ms": 100,
    "x_pipeline": 60,
    "x_batched": 14,
    "pre_post_share": 0.10,
    "long_s": 0.25,
}


COLUMNS = (
    "setup",
    "q/s",
    "p50 ms",
    "p99 ms",
    "x pipeline (1/call)",
    "x pipeline (batched)",
    "tokenizer / encoder / decoder share",
    "req/execute tok / encoder / dec",
    "encoder windows/s",
    "CPU us/request: tritonserver / tokenizer / encoder / decoder",
    "GPU memory MiB",
)


def cpu_cell(cpu_us: dict[str, float] | None) -> str:
    """CPU us per request of tritonserver and of each step (its instances summed), from ``perf.process_cpu``."""
    from perf.process_cpu import Process

    if not cpu_us:
        return ""
    per: dict[str, float] = {}
    for name, us in cpu_us.items():
        model = Process(0, name).model
        per[model] = per.get(model, 0.0) + us
    return " / ".join(f"{per.get(s, 0):.0f}" for s in ("tritonserver", *STEPS))


def render_row(row: dict, one: dict | None, batched: dict | None) -> str:
    def ratio(reference: dict | None) -> str:
        if reference is None:
            return ""
        if row.get("kind") == "documents":  # the document's time, the pipeline's over the server's
            return f"{reference['long_s'] / (row['p50_ms'] / 1000):.1f}" if "long_s" in reference else ""
        return f"{row['qps'] / reference['throughput_qps']:.1f}"

    cells = [
        row["setup"],
        f"{row['qps']:.1f}",
        f"{row['p50_ms']:.1f}",
        f"{row['p99_ms']:.1f}",
        ratio(one),
        ratio(batched),
        " / ".join(f"{row['share'][s]:.0%}" for s in STEPS) if "share" in row else "",
        " / ".join(f"{row['requests_per_execute'][s]:.1f}" for s in STEPS) if "share" in row else "",
        f"{row['windows_per_s']:.0f}" if "windows_per_s" in row else "",
        cpu_cell(row.get("cpu_us")),
        "n/a" if row.get("gpu_mib") is None else str(row["gpu_mib"]),
    ]
    return " | ".join(cells)


def pipeline_rows(one: dict | None, batched: dict | None, batch_size: int) -> list[dict]:
    rows = []
    if one:
        rows.append({**one, "setup": "pipeline, one question per call (fp32)", "qps": one["throughput_qps"]})
    if batched:
        rows.append(
            {
                **batched,
                "setup": f"pipeline, batch_size={batch_size} (fp32; latency per call of {batch_size} questions)",
                "qps": batched["throughput_qps"],
            }
        )
    return rows


def render(report: dict) -> str:
    one, batched = report["pipeline"].get("one_per_call"), report["pipeline"].get("batched")
    rows = pipeline_rows(one, batched, report["batch_size"])
    lines = [
        f"Machine: {report['machine']}; device: {report['device']} ({report['engine']}); checkpoint: "
        f"{report['size']} random weights; {report['date']}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows + report["served"]["rows"]:
        lines.append("| " + render_row(row, one, batched) + " |")
    parity = report["parity"]
    lines += [
        "",
        "q/s of the document row: documents per second; its x pipeline: the pipeline's time for the same "
        "document over the served p50. Shares: queue + compute per request of each step (Triton's statistics); "
        "encoder windows/s: windows per second of the model step's own compute; CPU us/request: each server "
        "process's CPU time over the run (/proc) per answered request, a step's instances summed.",
        "",
        f"Same answers as the pipeline (text, start, end; one question per call): {parity['same']}/"
        f"{parity['compared']} ({parity['share']:.1%}); contract >= {parity['contract']:.0%} on this device: "
        f"{'met' if parity['met'] else 'NOT met'}.",
        f"Refused for non-finite logits (the model step's NaN guard): {parity.get('non_finite', 0)}; other "
        f"errors: {parity.get('errors', 0) - parity.get('non_finite', 0)}.",
        "Server start-up (models loaded and warmed up, CUDA graphs captured on the GPU): "
        + (
            f"{report['served']['startup_s']:.0f} s."
            if report["served"]["startup_s"] is not None
            else "the server did not start."
        ),
        *checks_lines(report),
    ]
    if report["served"].get("errors"):
        lines += ["", "Failed:"] + [f"- {e}" for e in report["served"]["errors"]]
    if report["targets"]:
        lines += ["", "Targets (on the GPU):"] + [f"- {t}" for t in report["targets"]]
    return "\n".join(lines) + "\n"


def checks_lines(report: dict) -> list[str]:
    """The preflight, the re-export, the restart behind the front, the memory and the autoscaling target."""
    lines = []
    checked = report.get("preflight") or {}
    if checked:
        lines.append(
            "Preflight: "
            + "; ".join(
                f"{k} {checked[k]}"
                for k in ("gpu", "driver", "compute_capability", "memory", "torch", "torch_cuda", "python")
                if checked.get(k)
            )
            + "."
        )
    reexported = report.get("reexport") or {}
    if "compared" in reexported:
        lines.append(
            f"Re-export of another checkpoint, server restarted: {reexported['changed']}/{reexported['compared']} "
            f"answers changed ({'met' if reexported['met'] else 'NOT met: the old weights were served'})."
        )
    front = report.get("front") or {}
    if front.get("ran"):
        lines.append(
            f"tritonserver killed behind the front (nginx, deploy/k8s/base/nginx.conf): answered through it "
            f"{front['answered_before']} before, {front['answered_after']} after its restart "
            f"({front['recovery_s']:.0f} s to ready), {front['failed']} failed: {'met' if front['met'] else 'NOT met'}."
            if front.get("recovery_s") is not None
            else f"tritonserver behind the front: {front.get('why', 'did not recover')}: NOT met."
        )
    elif front:
        lines.append(f"Restart behind the front: not run ({front.get('why')}).")
    memory: dict[str, float] = {}
    for row in report["served"]["rows"]:
        for process, mb in (row.get("memory_mb") or {}).items():
            memory[process] = max(memory.get(process, 0.0), mb)
    if memory:
        lines.append(
            "Private memory at its largest after a run (MB): "
            + ", ".join(f"{p} {mb:,.0f}" for p, mb in memory.items())
            + f". The liveness probe bounds tritonserver's: allow at least {liveness_bound_mb(memory):,} MB here."
        )
    target = autoscaling_target(report)
    if target is not None:
        lines.append(
            f"Autoscaling target (70 % of the best windows/s of a run within p99 <= {TARGETS['p99_ms']} ms): "
            f"{target:,.0f} windows/s per pod."
        )
    return lines


def liveness_bound_mb(memory: dict[str, float]) -> int:
    """The liveness probe's bound for what was measured: tritonserver's largest private memory plus the base's
    2 GiB of headroom for the calls Triton 2.51 never frees, rounded up to 512 MB."""
    return int(-(-(memory.get("tritonserver", 0.0) + 2048) // 512) * 512)


def autoscaling_target(report: dict) -> float | None:
    """70 % of the best sustained windows/s (the ensemble's one-window questions/s) of a run within the p99 goal."""
    within = [r for r in report["served"]["rows"] if r["kind"] == "questions" and r["p99_ms"] <= TARGETS["p99_ms"]]
    return 0.7 * max(r["qps"] for r in within) if within else None


def targets(report: dict) -> list[str]:
    """Each GPU target, measured value and whether it is met (empty off the GPU: the targets are the GPU's)."""
    if report["device"] != "gpu":
        return []
    served = [r for r in report["served"]["rows"] if r["kind"] == "questions"]
    long_rows = [r for r in report["served"]["rows"] if r["kind"] == "documents"]
    one, batched = report["pipeline"].get("one_per_call"), report["pipeline"].get("batched")
    within = [r for r in served if r["p99_ms"] <= TARGETS["p99_ms"]]
    best = max(within, key=lambda r: r["qps"]) if within else None
    out = []

    def check(label: str, value: float | None, goal: float, higher: bool = True, fmt: str = "{:.0f}") -> None:
        if value is None:
            out.append(f"{label}: not measured")
            return
        met = value >= goal if higher else value <= goal
        out.append(
            f"{label}: {fmt.format(value)} ({'>=' if higher else '<='} {fmt.format(goal)}: "
            f"{'met' if met else 'NOT met'})"
        )

    check(
        "model step windows/s (fp16, best run)",
        max((r["windows_per_s"] for r in served), default=None),
        TARGETS["windows_per_s"],
    )
    check("questions/s with p99 <= 100 ms", best["qps"] if best else None, TARGETS["qps"])
    check(
        "x the pipeline, one question per call",
        best["qps"] / one["throughput_qps"] if best and one else None,
        TARGETS["x_pipeline"],
        fmt="{:.1f}",
    )
    check(
        "x the pipeline, batched",
        best["qps"] / batched["throughput_qps"] if best and batched else None,
        TARGETS["x_batched"],
        fmt="{:.1f}",
    )
    check(
        "tokenizer + decoder share of server time (worst run)",
        max((r["share"]["tokenizer"] + r["share"]["decoder"] for r in served), default=None),
        TARGETS["pre_post_share"],
        higher=False,
        fmt="{:.1%}",
    )
    check(
        "140,000-character document, seconds (p50)",
        long_rows[0]["p50_ms"] / 1000 if long_rows else None,
        TARGETS["long_s"],
        higher=False,
        fmt="{:.3f}",
    )
    return out
