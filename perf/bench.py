"""``make bench``: the served ensemble against ``pipeline('question-answering')``, same machine, same run.

Same weights (the full-size random checkpoint: the real model's compute), same inputs (SQuAD-sized pairs, the
parity tests' edge cases, plus one 140,000-character document). The pipeline is called as the model card calls
it, one question at a time, in fp32 before and after the served runs (the ratio uses the mean: speed drifts on a
shared machine) and in bf16 (``torch_dtype=torch.bfloat16``, the one argument a user would add) where the CPU has
bf16 matrix units; bare OpenVINO in bf16 on the exported graph, one question at a time, is the in-process
alternative a user would tune to. The server is called through ``TritonQA`` over gRPC at several concurrencies,
for every precision this CPU supports. Prints a table (throughput, p50/p99 latency, ratio to the fp32 pipeline,
per-step share of server time, padding executed, share of answers equal to the fp32 pipeline's) and writes
``perf/results/bench-<label>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from runtime.cpu import describe
from runtime.engines import ENGINES, graph_precision
from runtime.families import FAMILIES
from serving.configs import edit, step_configs
from serving.engines import choose
from serving.export import copy_repository, export, is_current
from testkit.cases import CASES
from testkit.inputs import long_document, squad_sized_pairs
from testkit.servers import Server, serve_module_command, start

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("tokenizer", "encoder", "decoder")
LONG_QUESTION = "Who received the grain shipped in 1057?"


def machine_label() -> str:
    """``<cores> cores of <CPU model> (<its matrix units>)[, GPU <name>]``."""
    gpu = ""
    if shutil.which("nvidia-smi"):
        gpu = (
            subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[0:1]
        )
        gpu = f", GPU {gpu[0]}" if gpu else ""
    return f"{os.cpu_count()} cores of {describe()}{gpu}"


def percentiles(latencies_s: list[float]) -> tuple[float, float]:
    ms = np.array(latencies_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def bench_pipeline(
    checkpoint: Path,
    pairs,
    duration_s: float,
    with_long: bool,
    device: int = -1,
    batch_size: int | None = None,
    min_questions: int = 0,
    precision: str = "fp32",
) -> dict:
    """The model card's pipeline on ``device`` (-1: CPU, 0: the first GPU), in ``precision`` (fp32, or bf16 as
    ``torch_dtype=torch.bfloat16``): one question per call, or with ``batch_size`` that many questions per call
    (batched by the pipeline itself), for ``duration_s`` and at least ``min_questions``. Latencies are per call;
    ``answers`` follow ``pairs`` (cycled), ``edge_answers`` the parity tests' edge cases."""
    import torch
    from transformers import pipeline

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    nlp = pipeline(
        "question-answering", model=str(checkpoint), tokenizer=str(checkpoint), device=device, torch_dtype=dtype
    )
    per_call = batch_size or 1

    def call(first: int) -> list[dict]:
        chunk = [pairs[(first + k) % len(pairs)] for k in range(per_call)]
        if batch_size is None:
            return [nlp({"question": chunk[0][0], "context": chunk[0][1]})]
        answers = nlp([{"question": q, "context": c} for q, c in chunk], batch_size=batch_size)
        return answers if isinstance(answers, list) else [answers]

    for first in range(0, 3 * per_call, per_call):  # warm-up
        call(first)
    latencies, answers, start = [], [], time.perf_counter()
    while time.perf_counter() - start < duration_s or len(answers) < min_questions:
        t = time.perf_counter()
        answers += call(len(answers))
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    result = {
        "questions": len(answers),
        "throughput_qps": len(answers) / elapsed,
        "p50_ms": percentiles(latencies)[0],
        "p99_ms": percentiles(latencies)[1],
        "answers": [(a["answer"], a["start"], a["end"]) for a in answers],
        "edge_answers": [
            (a["answer"], a["start"], a["end"]) for a in (nlp({"question": q, "context": c}) for q, c in CASES.values())
        ],
    }
    if with_long:
        context = long_document()
        t = time.perf_counter()
        answer = nlp({"question": LONG_QUESTION, "context": context})
        result["long_s"] = time.perf_counter() - t
        result["long_answer"] = (answer["answer"], answer["start"], answer["end"])
    return result


def step_times_ns(server: Server) -> dict:
    """Cumulative queue and compute time per composing model (Triton's statistics API)."""
    admin, times = server.admin, {}
    for step in STEPS:
        stats = admin.statistics(step)["inference_stats"]
        times[step] = {
            "queue": int(stats["queue"]["ns"]),
            "compute": sum(int(stats[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output")),
        }
    return times


def tokens(server: Server) -> dict:
    """The model step's real and executed (padded) tokens so far (its Prometheus counter)."""
    with urllib.request.urlopen(f"{server.metrics_url}/metrics") as r:
        text = r.read().decode()
    return {k: float(v) for k, v in re.findall(r'electra_qa_model_tokens_total\{kind="(\w+)"\} (\S+)', text)}


def bench_served(server: Server, pairs, concurrency: int, duration_s: float) -> dict:
    from client import TritonQA

    before_steps, before_tokens = step_times_ns(server), tokens(server)
    latencies: list[float] = []
    answers: dict[int, tuple] = {}
    lock, stop_at = threading.Lock(), time.perf_counter() + duration_s
    counter = iter(range(10**9))

    def worker():
        with TritonQA(server.grpc_url, timeout_s=120) as qa:
            while time.perf_counter() < stop_at:
                i = next(counter)
                t = time.perf_counter()
                answer = qa.ask(*pairs[i % len(pairs)])
                with lock:
                    latencies.append(time.perf_counter() - t)
                    answers[i % len(pairs)] = (answer.text, answer.start, answer.end)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    after_steps, after_tokens = step_times_ns(server), tokens(server)
    step_ns = {s: {k: after_steps[s][k] - before_steps[s][k] for k in ("queue", "compute")} for s in STEPS}
    total = sum(v["queue"] + v["compute"] for v in step_ns.values()) or 1
    real = after_tokens["real"] - before_tokens["real"]
    executed = after_tokens["executed"] - before_tokens["executed"]
    p50, p99 = percentiles(latencies)
    return {
        "concurrency": concurrency,
        "questions": len(latencies),
        "throughput_qps": len(latencies) / elapsed,
        "p50_ms": p50,
        "p99_ms": p99,
        "share": {s: (v["queue"] + v["compute"]) / total for s, v in step_ns.items()},
        "queue_share": sum(v["queue"] for v in step_ns.values()) / total,
        "padding_fraction": 1 - real / executed if executed else 0.0,
        "answers": answers,
    }


# what the CPU engines compute in (runtime.engines): onnxruntime's fp32 and int8, openvino's bf16
CPU_PRECISIONS = [p for engine in ENGINES.values() if engine.hardware == "cpu" for p in engine.precisions]


def cpu_engine(precision: str) -> str:
    """The CPU engine that computes in ``precision`` (onnxruntime for fp32 and int8, openvino for bf16)."""
    return choose("auto", precision, gpu=False)[0].name


def prepare(checkpoint: Path, repository: Path, precision: str) -> None:
    """The bench's own copy of the model repository: configs and adapters as checked in, but the model step's
    per-request limit lifted (the long document takes about a minute on 2 cores: its time is what is measured),
    the export redone only when the checkpoint or precision changed."""
    engine = cpu_engine(precision)
    current = is_current(repository, str(checkpoint), engine, precision)
    if not current:
        shutil.rmtree(repository, ignore_errors=True)
    copy_repository(ROOT / "model_repository", repository, over_existing=True)
    for config in step_configs(repository, "encoder"):
        edit(config, {"max_request_ms": "0"})
    if not current:
        export(str(checkpoint), repository, engine=engine, precision=precision)


def cpu_precisions() -> list[str]:
    """The precisions this CPU serves: fp32 and int8 everywhere, bf16 where it has bf16 matrix units."""
    from runtime.openvino_runner import bf16_units

    bf16 = bf16_units()
    return [p for p in CPU_PRECISIONS if p != "bf16" or bf16]


def bench_bare_openvino(repository: Path, pairs, duration_s: float) -> dict:
    """OpenVINO alone in bf16 on the exported graph, one question at a time, in this process: the tokenizer
    library's windows of the question (the pipeline's truncation and stride), one inference over them, the best
    start and end read off (no span search: a lower bound of what answering costs this way)."""
    import openvino

    from perf.prepost import library_tokenizer

    tokenizer = library_tokenizer(repository / "tokenizer" / "1" / "tokenizer.json")
    core = openvino.Core()
    graph = core.read_model(str(repository / "encoder" / "1" / "model.onnx"))
    compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    # the family's own inputs (RoBERTa, DistilBERT and DeBERTa-v3 take no token types)
    taken = {i.get_any_name() for i in compiled.inputs}
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}

    def answer(question: str, context: str) -> None:
        encoding = tokenizer.encode(question, context)
        windows = [encoding, *encoding.overflowing]
        width = max(len(w.ids) for w in windows)
        feeds = {
            name: np.array([getattr(w, field) + [0] * (width - len(w.ids)) for w in windows], np.int64)
            for name, field in fields.items()
            if name in taken
        }
        outputs = request.infer(feeds)
        for logits in outputs.values():
            np.argmax(logits, axis=1)

    for question, context in pairs[:3]:
        answer(question, context)
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < duration_s:
        t = time.perf_counter()
        answer(*pairs[len(latencies) % len(pairs)])
        latencies.append(time.perf_counter() - t)
    p50, p99 = percentiles(latencies)
    return {"throughput_qps": len(latencies) / (time.perf_counter() - start), "p50_ms": p50, "p99_ms": p99}


def bench_repository(args, precision: str) -> Path:
    """The bench's model repository for ``precision`` (one per exported graph: bf16 serves fp32's), prepared."""
    repository = args.work / graph_precision(precision) / "model_repository"
    prepare(args.checkpoint, repository, precision)
    return repository


def bench_precision(args, precision: str, pairs) -> tuple[list[dict], dict | None, list[tuple]]:
    """The served runs at ``precision`` (its own server, the export of its graph), the long document's, and the
    answers to the edge cases."""
    from client import TritonQA

    repository = bench_repository(args, precision)
    ports = (args.grpc_port, args.grpc_port + 1, args.grpc_port + 2)
    serve_args = ("--engine", cpu_engine(precision), "--precision", precision)
    server = start(
        serve_module_command(repository, ports, serve_args),
        ports,
        repository.parent / f"server-{precision}.log",
        repository,
        ROOT,
    )
    try:
        with TritonQA(server.grpc_url, timeout_s=600) as qa:
            for question, context in pairs[:8]:
                qa.ask(question, context)
            runs = []
            for concurrency in args.concurrency:
                print(f"served {precision}, concurrency {concurrency}...", flush=True)
                runs.append({"precision": precision, **bench_served(server, pairs, concurrency, args.duration_s)})
            edge = [(a.text, a.start, a.end) for a in (qa.ask(q, c) for q, c in CASES.values())]
            long_run = None
            if not args.no_long:
                t = time.perf_counter()
                answer = qa.ask(LONG_QUESTION, long_document())
                long_run = {
                    "precision": precision,
                    "seconds": time.perf_counter() - t,
                    "answer": (answer.text, answer.start, answer.end),
                }
    finally:
        server.stop()
    return runs, long_run, edge


def same_share(got: list, expected: list) -> float:
    return sum(tuple(g) == tuple(e) for g, e in zip(got, expected)) / max(1, len(expected))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        help="a checkpoint directory or hub id, any family served (make bench MODEL=...); default: the random "
        "full-size one of --family, built when missing",
    )
    parser.add_argument(
        "--family", choices=FAMILIES, default="electra", help="of the default random checkpoint (default electra)"
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=CPU_PRECISIONS,
        help="served (default: every one this CPU supports)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--no-long", action="store_true", help="skip the 140,000-character document")
    parser.add_argument("--label", default="cpu")
    parser.add_argument("--grpc-port", type=int, default=18001)
    args = parser.parse_args(argv)
    supported = cpu_precisions()
    precisions = args.precisions or supported

    if args.checkpoint is None:
        args.checkpoint = ROOT / "checkpoints" / f"{args.family}-qa-base"  # as make checkpoint names it
        if not (args.checkpoint / "config.json").exists():
            print(f"building the full-size random {args.family} checkpoint in {args.checkpoint}", flush=True)
            built = subprocess.run(  # sentencepiece's trainer in a process of its own
                [sys.executable, "-m", "testkit.checkpoints", "--size", "base", "--family", args.family]
                + ["--out", str(args.checkpoint)],
                cwd=ROOT,
            )
            if built.returncode:
                return built.returncode
    elif Path(args.checkpoint).is_dir():
        args.checkpoint = Path(args.checkpoint).resolve()
    pairs = squad_sized_pairs(200)
    machine = machine_label()
    print(f"machine: {machine}\npipeline (transformers 4.57.6, in-process, one question per call)...", flush=True)
    reference = bench_pipeline(args.checkpoint, pairs, args.duration_s, not args.no_long)
    competitors = []  # the pipeline in bf16 and bare OpenVINO bf16, where this CPU has bf16 units
    if "bf16" in precisions:
        print("pipeline in bf16 (torch_dtype=torch.bfloat16)...", flush=True)
        bf16 = bench_pipeline(args.checkpoint, pairs, args.duration_s, with_long=False, precision="bf16")
        competitors.append({"setup": "pipeline, torch_dtype=torch.bfloat16, in-process", **bf16})
    runs, long_runs, edges = [], [], {}
    for precision in precisions:
        precision_runs, long_run, edges[precision] = bench_precision(args, precision, pairs)
        runs += precision_runs
        long_runs += [long_run] if long_run else []
    if "bf16" in precisions:
        print("bare OpenVINO in bf16, one question at a time...", flush=True)
        bare = bench_bare_openvino(bench_repository(args, "bf16"), pairs, args.duration_s)
        competitors.append({"setup": "bare OpenVINO bf16 on the exported graph, in-process", **bare})
    # the pipeline again after the served runs: on a shared machine speed drifts, so the ratio uses the mean
    print("pipeline again...", flush=True)
    again = bench_pipeline(args.checkpoint, pairs, args.duration_s, with_long=False)
    reference["throughput_before_after_qps"] = [reference["throughput_qps"], again["throughput_qps"]]
    reference["throughput_qps"] = (reference["throughput_qps"] + again["throughput_qps"]) / 2

    expected = dict(enumerate(reference.pop("answers")))
    expected_edge = reference.pop("edge_answers")
    for run in runs:
        got = run.pop("answers")
        common = [i for i in got if i in expected]  # inputs both answered
        run["agreement"] = sum(got[i] == tuple(expected[i]) for i in common) / max(1, len(common))
        run["edge_agreement"] = same_share(edges[run["precision"]], expected_edge)
    for competitor in competitors:
        if "answers" in competitor:
            got = competitor.pop("answers")
            competitor["agreement"] = same_share(got, [expected[i % len(expected)] for i in range(len(got))])
            competitor["edge_agreement"] = same_share(competitor.pop("edge_answers"), expected_edge)
    report = {
        "machine": machine,
        "label": args.label,
        "inputs": f"SQuAD-sized (~{mean_pair_tokens(args.checkpoint, pairs):.0f} tokens)",
        "checkpoint": family_of(args.checkpoint),
        "pipeline": reference,
        "competitors": competitors,
        "served": runs,
        "long": long_runs,
        "date": time.strftime("%Y-%m-%d"),
    }
    out = ROOT / "perf" / "results" / f"bench-{args.label}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render(report)
    out.with_suffix(".md").write_text(markdown)
    plot(report, out.with_suffix(".png"))
    print(markdown)
    return 0


def mean_pair_tokens(checkpoint, pairs) -> float:
    """The pairs' mean length in the checkpoint's own tokens, special tokens included (tokenizers differ)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    return float(np.mean([len(tokenizer(q, c)["input_ids"]) for q, c in pairs]))


def family_of(checkpoint) -> str:
    """The checkpoint's family (config.json's model_type), its layers and width: what the figures are of."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(checkpoint))
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    width = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    return f"{config.model_type}, {layers} layers x {width}"


def render(report: dict) -> str:
    ref = report["pipeline"]
    lines = [
        f"Machine: {report['machine']} ({report['date']}); "
        + (f"checkpoint: random-weight {report['checkpoint']}; " if "checkpoint" in report else "")
        + f"inputs: {report['inputs']}; answers compared with the fp32 pipeline's (SQuAD-sized pairs / the "
        f"{len(CASES)} edge cases).",
        "",
        "| setup | throughput (q/s) | p50 (ms) | p99 (ms) | × pipeline | tokenizer / encoder / decoder share "
        "| queue share | padding | same answer |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| pipeline fp32, in-process (mean of {' and '.join(f'{q:.2f}' for q in ref['throughput_before_after_qps'])}, "
        f"before and after) | {ref['throughput_qps']:.2f} | {ref['p50_ms']:.0f} | {ref['p99_ms']:.0f} | 1.00 "
        "| | | | 100% / 100% |",
    ]
    for other in report.get("competitors", []):
        same = f"{other['agreement']:.0%} / {other['edge_agreement']:.0%}" if "agreement" in other else "(not decoded)"
        lines.append(
            f"| {other['setup']} | {other['throughput_qps']:.2f} | {other['p50_ms']:.0f} | {other['p99_ms']:.0f} "
            f"| {other['throughput_qps'] / ref['throughput_qps']:.2f} | | | | {same} |"
        )
    for run in report["served"]:
        share = " / ".join(f"{run['share'][s]:.0%}" for s in STEPS)
        lines.append(
            f"| served {run['precision']}, concurrency {run['concurrency']} | {run['throughput_qps']:.2f} "
            f"| {run['p50_ms']:.0f} "
            f"| {run['p99_ms']:.0f} | {run['throughput_qps'] / ref['throughput_qps']:.2f} | {share} "
            f"| {run['queue_share']:.0%} | {run['padding_fraction']:.1%} "
            f"| {run['agreement']:.0%} / {run.get('edge_agreement', float('nan')):.0%} |"
        )
    for run in report["long"]:
        same = tuple(run["answer"]) == tuple(ref["long_answer"])
        lines += [
            "",
            f"140,000-character document ({run['precision']}): pipeline {ref['long_s']:.1f} s, served "
            f"{run['seconds']:.1f} s ({run['seconds'] / ref['long_s']:.2f} of the pipeline's time), "
            f"same answer: {same}.",
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for precision in dict.fromkeys(r["precision"] for r in report["served"]):
        runs = [r for r in report["served"] if r["precision"] == precision]
        left.plot(
            [r["concurrency"] for r in runs],
            [r["throughput_qps"] for r in runs],
            "o-",
            label=f"served {precision} (gRPC)",
        )
        right.plot([r["p99_ms"] for r in runs], [r["throughput_qps"] for r in runs], "o-", label=precision)
        for r in runs:
            right.annotate(f"c={r['concurrency']}", (r["p99_ms"], r["throughput_qps"]), fontsize=7)
    left.axhline(report["pipeline"]["throughput_qps"], color="grey", linestyle="--", label="pipeline")
    left.set(xlabel="concurrent requests", ylabel="questions / s", title="Throughput")
    left.legend()
    right.legend()
    right.set(xlabel="p99 latency (ms)", ylabel="questions / s", title="Throughput vs p99 latency")
    fig.suptitle(f"electra_qa vs pipeline — {report['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
