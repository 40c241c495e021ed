"""Smoke runs of the benchmark scripts on tiny checkpoints, so that they cannot rot.

Each script runs in-process through its `main(argv)` with the smoke preset and the smallest
settings; the tests check what the tables must say (counted network evaluations, the
reference row's zero differences, the sections written to a RESULTS.md), not timings.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch_threads import one_thread

from benchmarks import bench_efficiency, bench_samplers, gpu_check
from benchmarks.common import (
    CountingModel,
    markdown_table,
    parse_sampler,
    peak_memory,
    stage_sampler,
    update_section,
)
from mrnet_utils.errors import MRNetError


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One CPU thread: tiny networks run faster so, and far faster on a machine that others load."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def savepoints(smoke_run):
    """The folder of the smoke base64 and sr1 runs (conftest.py), named <stage>_swin as run_all.sh names them."""
    folders = {smoke_run(stage).folder.parent for stage in ("base64", "sr1")}
    assert len(folders) == 1
    return folders.pop()


def test_bench_samplers_compares_each_sampler_with_the_full_chain(tiny_cache, savepoints, tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other section\n\nkept\n")
    argv = ["--data", str(tiny_cache), "--checkpoints", str(savepoints), "--stages", "base64", "sr1",
            "--reference", "ddpm:6", "--samplers", "ddim:5", "dpmpp:3", "--sr-images", "2", "--base-images", "2",
            "--batch-size", "2", "--other-seeds", "--results", str(results)]
    report = bench_samplers.main(argv)
    lines = report.splitlines()
    # one row per sampler and stage; the reference row differs from itself by nothing;
    # a generating stage also runs the full chain from the next seeds (an SR stage has fixed inputs)
    def samplers(stage):
        return [line.split(" | ")[1] for line in lines if line.startswith(f"| {stage} |")]

    assert samplers("base64_swin") == ["ddpm 6", "ddpm 6, seeds 2-3", "ddim 5", "dpmpp 3"]
    assert samplers("sr1_swin") == ["ddpm 6", "ddim 5", "dpmpp 3"]
    other = next(line for line in lines if line.startswith("| base64_swin | ddpm 6, seeds")).split(" | ")
    assert float(other[4]) > 0 and float(other[5]) > 0  # other seeds, other images
    sr_reference = next(line for line in lines if line.startswith("| sr1_swin | ddpm 6 |")).split(" | ")
    assert sr_reference[5] == "0" and sr_reference[7] == "0"  # dPSNR, dSSIM
    assert 5 < float(sr_reference[4]) < 60  # a PSNR in dB
    base_reference = next(line for line in lines if line.startswith("| base64_swin | ddpm 6 |")).split(" | ")
    assert base_reference[4] == "0" and base_reference[5] == "0"  # distances of the full chain to itself
    assert report.count("**Fewest network evaluations within the margin: ") == 2
    written = results.read_text()
    assert "## Other section\n\nkept" in written
    for stage in ("base64_swin", "sr1_swin"):  # a section each, so that stages can be rerun one at a time
        assert f"## Samplers: {stage}, smoke checkpoints, CPU" in written
    assert "python -m benchmarks.bench_samplers --data" in written and "load average at start" in written


def test_bench_samplers_fp32_precision_changes_nothing_on_a_cpu_and_restores_tf32(tiny_cache, savepoints):
    """--precision fp32 only turns off bf16 autocast and TF32, which a CPU never uses: same samples, same table."""
    argv = ["--data", str(tiny_cache), "--checkpoints", str(savepoints), "--stages", "base64", "--reference",
            "ddpm:4", "--samplers", "dpmpp:3", "--base-images", "2", "--batch-size", "2", "--no-write"]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    def table(report: str) -> list[list[str]]:  # the rows without the timing column
        rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| base64_swin |")]
        return [row[:3] + row[4:] for row in rows]

    default, fp32 = (table(bench_samplers.main(argv + extra)) for extra in ([], ["--precision", "fp32"]))
    assert len(default) == 2 and default == fp32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == tf32


def test_the_default_is_the_fewest_evaluations_within_the_margin():
    rows = [
        {"sampler": "ddpm 1000", "NFE": 1000, "within margin": "yes"},
        {"sampler": "ddim 50", "NFE": 50, "within margin": "yes"},
        {"sampler": "dpmpp 10", "NFE": 10, "within margin": "no"},
        {"sampler": "dpmpp 15", "NFE": 15, "within margin": "yes"},
    ]
    assert bench_samplers.fewest_steps(rows) == "dpmpp 15"
    tie = [rows[0], {"sampler": "ddpm 100", "NFE": 100, "within margin": "yes"},
           {"sampler": "dpmpp_sde 100", "NFE": 100, "within margin": "yes"}]
    assert bench_samplers.fewest_steps(tie) == "dpmpp_sde 100"  # how single256's default was settled
    other_seeds = {"sampler": "ddpm 1000, seeds 16-31", "NFE": 1000, "within margin": "yes"}  # not faster
    assert bench_samplers.fewest_steps([rows[0], other_seeds, rows[2]]).startswith("ddpm 1000 (no faster sampler")

def test_sampler_arguments_parse_or_say_what_is_expected():
    assert parse_sampler("ddpm:T", 1000) == ("ddpm", 1000)
    assert stage_sampler("base64=dpmpp_sde:50") == ("base64", ("dpmpp_sde", 50))
    for text in ("dpmpp15", "euler:10", "ddpm:0", "ddpm:T"):  # no T without a schedule
        with pytest.raises(MRNetError, match="SAMPLER:STEPS"):
            parse_sampler(text)
    with pytest.raises(argparse.ArgumentTypeError, match="STAGE=SAMPLER:STEPS"):
        stage_sampler("base=ddpm:250")
    with pytest.raises(argparse.ArgumentTypeError, match="SAMPLER:STEPS"):
        stage_sampler("base64=ddpm")


def test_bench_efficiency_counts_network_evaluations_and_writes_its_tables(tiny_cache, tmp_path):
    results = tmp_path / "RESULTS.md"
    argv = ["--preset", "smoke", "--images", "2", "--batch-size", "2", "--reference-steps", "2",
            "--train-window", "1", "--repeats", "1", "--train-stages", "sr1", "--samplers", "sr1=dpmpp_sde:3",
            "--results", str(results)]
    report = bench_efficiency.main(argv)
    # each stage samples with its default (stages.STAGES), sr1 here with SDE-DPM-Solver++ in 3: 25 + 3 + 10 evaluations
    assert "| cascade | dpmpp_sde 25 + dpmpp_sde 3 + dpmpp 10 | 38 |" in report
    assert "| single256 | dpmpp_sde 100 | 100 |" in report
    assert "| 2000+1000+1000 steps |" in report and "extrapolated from 2 steps per stage" in report
    assert "| sr1_swin | 4 |" in report  # the training row, at the smoke batch
    assert report.count("| base64_swin (64x64) |") == 1
    assert "## Efficiency: smoke preset, swin, CPU, 1 thread(s)" in results.read_text()


def test_counting_model_counts_calls_and_images():
    counted = CountingModel(torch.nn.Identity())
    counted(torch.zeros(3, 1, 4, 4))
    counted(torch.zeros(2, 1, 4, 4))
    assert (counted.calls, counted.images) == (2, 5)


def test_peak_memory_sees_a_large_allocation_and_resets_between_blocks():
    with peak_memory(torch.device("cpu")) as big:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB
        del block
    with peak_memory(torch.device("cpu")) as small:
        pass
    assert big.mib > 64
    if big.kind == "process RSS":  # Linux: the peak is reset on entry
        assert small.mib < big.mib - 32


def test_update_section_replaces_in_place(tmp_path):
    path = tmp_path / "RESULTS.md"
    update_section(path, "A", "first")
    update_section(path, "B", "second")
    update_section(path, "A", "third")
    assert path.read_text() == "# Benchmark results\n\n## A\n\nthird\n\n## B\n\nsecond\n"
    assert markdown_table([{"x": 1.23456, "y": "a|b"}]) == "| x | y |\n|---|---|\n| 1.235 | a\\|b |"


def test_gpu_check_falls_back_to_the_cpu_and_says_so(tmp_path, capsys):
    status = gpu_check.main(["--out", str(tmp_path), "--samplers", "base64=ddpm:4"])
    assert status == 0, (tmp_path / "gpu_check_errors.txt").read_text()
    assert "CUDA is not available: this is the CPU FALLBACK" in capsys.readouterr().out
    report = (tmp_path / "gpu_check.md").read_text()
    assert report.startswith("## GPU check: CPU fallback (no CUDA)\n")
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    bf16 = results["bf16 autocast against fp32"][0]
    assert 0 < bf16["one step: rel. error"] < gpu_check.STEP_TOLERANCE
    assert results["host syncs in the sampling loop"][0]["host syncs in the loop"] == "not checked: needs CUDA"
    for phase in ("memory format", "training throughput", "sampling throughput"):
        assert isinstance(results[phase], list) and results[phase], phase
    cascade = results["sampling throughput"][0]  # base64 as --samplers says, the others DPM-Solver++ 3 steps
    assert (cascade["samplers, batch"], cascade["NFE / image"]) == ("ddpm 4 + dpmpp 3 + dpmpp 3, batch 2", 10)
    # --record puts the report into a RESULTS.md as its own section
    target = tmp_path / "RESULTS.md"
    gpu_check.record(tmp_path / "gpu_check.md", target)
    assert "## GPU check: CPU fallback (no CUDA)\n\nCUDA is not available" in target.read_text()
