"""`edgellm bench` on SmolLM2: a small matrix, every output format, the HTML report with its plots."""
from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET

import pytest

from edgellm.benchmark import BenchConfig, BenchResult, run_bench, to_csv, to_json, to_markdown, to_text
from edgellm.errors import EdgeLLMError
from edgellm.report import plot_histogram, render_html


@pytest.fixture(scope="module")
def small_bench(smollm2_gguf) -> BenchResult:
    cfg = BenchConfig(artifacts=(str(smollm2_gguf("Q4_0")),), threads=(1,), prompt_tokens=(16,), gen_tokens=(8,),
                      depths=(0, 32), repetitions=2, quality_reference=str(smollm2_gguf("Q8_0")), quality_tokens=64)
    return run_bench(cfg, progress=False, bandwidth=10.0, bandwidth_source="given")


@pytest.mark.slow
def test_matrix_rows_and_derived_numbers(small_bench: BenchResult) -> None:
    rows = small_bench.rows
    assert [(r.depth, r.threads, r.prompt_tokens) for r in rows] == [(0, 1, 16), (32, 1, 16)]
    for r in rows:
        assert r.repetitions == 2 and r.decode_tps and r.decode_tps > 0 and r.decode_tps_sd is not None
        assert r.quant == "Q4_0" and r.size_bytes > 50 * 2**20
        # efficiency = decode tok/s x bytes per token / bandwidth, with the bandwidth we passed
        assert r.bandwidth_efficiency == pytest.approx(r.decode_tps * r.size_bytes / 10e9)
        assert r.energy_method != "unavailable" and r.energy_per_token_j and r.energy_per_token_j > 0
        assert r.kld is not None and r.kld > 0 and 0.5 < r.top1 < 1.0
        assert len(r.latencies_ms) == 2 * (round(r.generated) - 1)


@pytest.mark.slow
def test_output_formats(small_bench: BenchResult) -> None:
    md = to_markdown(small_bench)
    assert md.count("| gguf:Q4_0 |") == 2 and "± " in md and "given" in md
    parsed = list(csv.DictReader(io.StringIO(to_csv(small_bench))))
    assert [int(r["depth"]) for r in parsed] == [0, 32]
    data = json.loads(to_json(small_bench))
    assert data["bandwidth_gbs"] == 10.0 and len(data["rows"]) == 2 and "latencies_ms" not in data["rows"][0]
    assert len(to_text(small_bench).splitlines()) == 3


@pytest.mark.slow
def test_html_report_has_valid_svg_plots(small_bench: BenchResult) -> None:
    page = render_html(small_bench)
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) >= 3  # threads, trade-off, one histogram
    for svg in svgs:
        ET.fromstring(svg)  # well-formed XML
    assert "<polyline" in svgs[0] and "<rect" in svgs[-1]


def test_histogram_counts_every_step() -> None:
    svg = plot_histogram("x", [1.0, 2.0, 2.5, 3.0, 10.0], bins=5)
    root = ET.fromstring(svg)
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("fill") == "#1f77b4"]
    assert len(bars) == 5


def test_bench_refuses_empty_matrix() -> None:
    with pytest.raises(EdgeLLMError):
        run_bench(BenchConfig(artifacts=()), progress=False)


def test_cli_rejects_bad_thread_list() -> None:
    from edgellm.cli import main

    assert main(["bench", "x.gguf", "-t", "one,two"]) == 1
