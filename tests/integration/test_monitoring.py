"""The Grafana dashboard and the autoscaler's prometheus-adapter rules read only metrics the server exports:
checked against a live /metrics scrape of the embedded server (after it answered requests)."""

import re
import urllib.request

from client import ENSEMBLE
from testkit.cases import CASES
from tests.monitoring import GPU_ONLY_METRICS, adapter_queries, dashboard_queries, metric_names


def scrape(server) -> str:
    with urllib.request.urlopen(f"{server.metrics_url}/metrics", timeout=10) as response:
        return response.read().decode()


def exported_names(text: str) -> set[str]:
    return {
        re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group()
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_dashboard_and_autoscaler_read_only_metrics_the_server_exports(triton_server, qa):
    qa.ask(*CASES["card"])
    qa.ask_many([CASES["card"], CASES["card"]])
    exported = exported_names(scrape(triton_server))
    # GPU metrics come from DCGM and exist only where Triton sees a GPU; this server runs on CPU
    assert not exported & GPU_ONLY_METRICS or exported >= GPU_ONLY_METRICS
    for source, queries in (("dashboard", dashboard_queries()), ("prometheus-adapter rules", adapter_queries())):
        for query in queries:
            missing = metric_names(query) - exported - GPU_ONLY_METRICS
            assert not missing, f"the {source} reads {sorted(missing)}, which /metrics does not export: {query}"


def test_latency_summaries_give_p50_and_p99_of_the_ensemble(triton_server, qa):
    qa.ask(*CASES["card"])
    text = scrape(triton_server)
    for quantile in ("0.5", "0.99"):
        assert re.search(
            rf'^nv_inference_request_summary_us\{{model="{ENSEMBLE}",[^}}]*quantile="{quantile}"\}} '
            r"[0-9.e+]+$",
            text,
            re.M,
        ), f"no p{float(quantile) * 100:g} of electra_qa on /metrics"
