"""Smoke runs of the benchmark scripts on tiny checkpoints, so that they cannot rot.

Each script runs in-process through its `main(argv)` with the smoke preset and the smallest
settings; the tests check what the tables must say (counted network evaluations, the
reference row's zero differences, the sections written to a RESULTS.md), not timings.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import mmap
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch_threads import one_thread

from benchmarks import bench_efficiency, bench_guidance, bench_reference_training, bench_samplers, gpu_check, mutation_score
from benchmarks.common import (
    CountingModel,
    markdown_table,
    parse_sampler,
    peak_memory,
    stage_sampler,
)
from benchmarks.sections import update_section
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import statistics
from mrnet_utils.study import labels
from mrnet_utils.study.layout import StudyPaths


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


def _rows(section: str) -> list[list[str]]:
    """The table rows of one stage's section: the cells, without the leading and trailing bars."""
    return [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_bench_samplers_tests_equivalence_with_the_full_chain_on_tuning_exams(tiny_cache, savepoints, tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other section\n\nkept\n", encoding="utf-8")
    argv = ["--data", str(tiny_cache), "--checkpoints", str(savepoints), "--stages", "base64", "sr1",
            "--samplers", "ddim:5", "dpmpp:3", "resshift:2", "--tuning-exams", "1", "--base-images", "6",
            "--batch-size", "6", "--runs", f"base64={savepoints / 'base64_swin'}", "--results", str(results)]
    report = bench_samplers.main(argv)
    base, sr1 = report.split("## Samplers: ")[1:]
    # the chain first, then the candidates the stage's process takes, then the other runs with their default sampler
    assert [row[0] for row in _rows(base)] == ["ddpm 100", "ddim 5", "dpmpp 3", "base64_swin: dpmpp_sde 5"]
    assert [row[1] for row in _rows(base)] == ["100", "5", "3", "5"]  # network evaluations per image, counted
    verdicts = pd.read_csv(bench_samplers.verdict_file(results, "smoke", "base64_swin"))
    assert list(verdicts["steps"]) == [100, 5, 3, 5] and set(verdicts["stage"]) == {"base64"}
    assert json.loads(verdicts["margins"][0]) == {"psnr_db": 0.2, "ssim": 0.005, "relative": 0.1}  # endpoints
    assert [row[0] for row in _rows(sr1)] == ["resshift 4", "resshift 2"]
    assert "dhistogram_w1 [90% CI]" in base and "ddiversity [90% CI]" in base and "dpsnr [90% CI]" in sr1
    chain = _rows(sr1)[0]
    assert chain[3].startswith("+0 [") and chain[3].endswith("nan, +nan]")  # itself; 1 tuning exam: no interval
    # with one tuning exam there is no interval, so nothing can be shown equivalent
    assert all(row[-2] == "no" for row in _rows(base) + _rows(sr1))
    assert _rows(sr1)[1][-1] == "psnr -; ssim -; spectrum_error -"  # nor any margin resolved
    assert report.count("**Fewest network evaluations equivalent to the chain: ") == 2
    assert "1 tuning exams" in sr1
    written = results.read_text(encoding="utf-8")
    assert "## Other section\n\nkept" in written
    for stage in ("base64_swin", "sr1_swin"):  # a section each, so that stages can be rerun one at a time
        assert f"## Samplers: {stage}, smoke checkpoints, CPU" in written
    assert "python -m benchmarks.bench_samplers --data" in written and "load average at start" in written
    with pytest.raises(MRNetError, match="no valid slices to tune on"):
        bench_samplers.main(argv[:-2] + ["--no-write"] + argv[-2:][:0] + ["--tuning-exams", "0"])


def test_bench_samplers_resumes_with_the_seeds_it_lacks_and_refuses_samples_drawn_otherwise(
    tiny_cache, savepoints, tmp_path, monkeypatch
):
    """A stop in the second batch keeps the first batch of every arm; a rerun draws only the missing seeds, leaves
    the saved batches as they were and lists both sessions; samples drawn with other settings are refused."""
    out = tmp_path / "saved"
    argv = ["--data", str(tiny_cache), "--checkpoints", str(savepoints), "--stages", "base64", "--samplers",
            "ddim:5", "--tuning-exams", "1", "--base-images", "4", "--batch-size", "2", "--out", str(out), "--no-write"]
    drawn, sample_stage = [], bench_samplers.sample_stage

    def recording(model, cfg, seeds, *args, **kwargs):
        if len(drawn) == stop_at:
            raise KeyboardInterrupt
        drawn.append(seeds)
        return sample_stage(model, cfg, seeds, *args, **kwargs)

    monkeypatch.setattr(bench_samplers, "sample_stage", recording)
    stop_at = 2  # the chain's second batch
    with pytest.raises(KeyboardInterrupt):
        bench_samplers.main(argv)
    folder = out / "base64_swin"
    first = {path: path.read_bytes() for path in folder.glob("*/seeds_*.npz")}
    assert sorted(path.name for path in first) == ["seeds_000000_000001.npz"] * 2
    drawn.clear()
    stop_at = -1
    report = bench_samplers.main(argv)
    assert drawn == [[2, 3], [2, 3]]  # the chain's and DDIM's missing seeds, nothing else
    assert all(path.read_bytes() == data for path, data in first.items())
    assert "Samples drawn in 2 session(s)" in report and report.count("ddpm 100: 2; ddim 5: 2") == 2
    assert [row[0] for row in _rows(report)] == ["ddpm 100", "ddim 5"]
    drawn.clear()
    bench_samplers.main([*argv, "--base-images", "2"])  # the first two seeds: all saved
    assert drawn == []
    with pytest.raises(MRNetError, match="holds samples drawn otherwise .*precision 'config' -> 'fp32'"):
        bench_samplers.main(argv + ["--precision", "fp32"])


def test_bench_guidance_compares_each_scale_with_the_first_seed_by_seed(tiny_cache, tmp_path):
    run = labels.train_generator(StudyPaths(tmp_path, "smoke"), tiny_cache, progress=False)
    results = tmp_path / "RESULTS.md"
    argv = ["--data", str(tiny_cache), "--checkpoint", str(run.run_dir), "--samples", "6", "--requests", "acl=1",
            "abnormal=0", "--scales", "0", "2", "--probe-steps", "2", "--tuning-exams", "0", "--batch-size", "6",
            "--no-progress", "--results", str(results)]
    body = bench_guidance.main(argv)
    rows = _rows(body)
    assert [row[:3] for row in rows] == [["acl=1", "0", "6"], ["acl=1", "2", "6"], ["abnormal=0", "0", "6"],
                                         ["abnormal=0", "2", "6"]]
    for unconditional, guided in (rows[:2], rows[2:]):  # the change is the guided share less the unconditional one
        assert float(guided[4]) == pytest.approx(float(guided[3]) - float(unconditional[3]), abs=1e-3)
    assert body.count("- acl=1: share ") == 1 and "**Guidance 2 against 0, paired by seed:**" in body
    assert "probe trained 2 steps on 8 real train slices" in body and "of 2 reported valid exams (0 set aside" in body
    title = "## Guidance: base64_swin, smoke checkpoint, 6 samples per request and scale"
    assert title in results.read_text(encoding="utf-8") and "python -m benchmarks.bench_guidance --data" in results.read_text(encoding="utf-8")
    with pytest.raises(MRNetError, match="request {'acl': 1, 'meniscus': 0} is not one label set to 1 or 0"):
        bench_guidance.main([*argv[:7], "acl=1,meniscus=0", *argv[9:], "--no-write"])
    with pytest.raises(MRNetError, match="unknown label 'knee'"):
        bench_guidance.parse_args(["--requests", "knee=1"])


def test_bench_samplers_fp32_precision_changes_nothing_on_a_cpu_and_restores_tf32(tiny_cache, savepoints, tmp_path):
    """--precision fp32 only turns off bf16 autocast and TF32, which a CPU never uses: same samples, same table."""
    argv = ["--data", str(tiny_cache), "--checkpoints", str(savepoints), "--stages", "sr1", "--samplers",
            "resshift:2", "--tuning-exams", "1", "--batch-size", "2", "--no-write"]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    def table(report: str) -> list[list[str]]:  # the rows without the timing column
        return [row[:2] + row[3:] for row in _rows(report)]

    default, fp32 = (table(bench_samplers.main(argv + extra + ["--out", str(tmp_path / extra[-1])]))
                     for extra in (["--precision", "config"], ["--precision", "fp32"]))
    assert len(default) == 2 and default == fp32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == tf32


def test_each_interval_names_the_smallest_margin_it_passes():
    """The interval's farthest end from zero: as a share of the chain's value where the margin is one."""
    def comparison(metric, low, high):
        return statistics.Comparison("a", "chain", metric, statistics.Estimate(0.0, low, high, 0.1, 8, 8), True)
    assert bench_samplers._tightest_margin(comparison("diversity", -0.03, 0.01), chain=0.5) == "diversity 6%"
    assert bench_samplers._tightest_margin(comparison("psnr", -0.05, 0.125), chain=None) == "psnr 0.125"
    assert bench_samplers._tightest_margin(comparison("diversity", -0.05, 0.125), chain=0.0) == "diversity 0.125"
    nan = float("nan")
    assert bench_samplers._tightest_margin(comparison("psnr", nan, nan), chain=None) == "psnr -"


def _row(path: str, nfe: int, equivalent: str) -> dict:
    return {"path": path, "sampler": path.split()[-2], "NFE": nfe, "equivalent": equivalent}


def test_the_default_is_the_fewest_evaluations_found_equivalent():
    rows = [_row("ddpm 1000", 1000, "yes"), _row("ddim 50", 50, "yes"), _row("dpmpp 10", 10, "no"),
            _row("dpmpp 15", 15, "yes")]
    assert bench_samplers.fewest_steps(rows) == "dpmpp 15"
    tie = [rows[0], _row("ddpm 100", 100, "yes"), _row("dpmpp_sde 100", 100, "yes")]
    assert bench_samplers.fewest_steps(tie) == "dpmpp_sde 100"  # how single256's default was settled
    assert bench_samplers.fewest_steps([rows[0], rows[2]]).startswith("ddpm 1000 (no faster path equivalent)")
    distilled = [rows[0], rows[3], _row("base64_swin_distilled: ddim 4", 4, "yes")]
    assert bench_samplers.fewest_steps(distilled) == "base64_swin_distilled: ddim 4"


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
    argv = ["--preset", "smoke", "--images", "2", "--batch-size", "2", "--batch-sizes", "1", "--reference-steps", "2",
            "--train-window", "1", "--repeats", "1", "--train-stages", "sr1", "--samplers", "sr1=resshift:3",
            "--verdicts", "smoke", "--probe-steps", "10", "--results", str(results)]
    report = bench_efficiency.main(argv)
    # each stage samples with its quick sampler and its default, alike in the smoke preset (one row, both names:
    # 5 SDE steps for the generating stages, the residual SR stages' 4-step chain), sr1 here in 3
    assert "| cascade | quick = defaults | dpmpp_sde 5 + resshift 3 + resshift 4 | 12 |" in report
    assert "| single256 | quick = defaults | dpmpp_sde 5 | 5 |" in report
    # no stage has a verdict here: the quality-checked path is every stage's full chain
    assert "| cascade | quality-checked | ddpm 100 + resshift 4 + resshift 4 | 108 |" in report
    assert "| single256 | quality-checked | ddpm 100 | 100 |" in report
    assert "- base64: no verdict: the full chain" in report
    assert "| 2000+1000+1000 steps |" in report and "extrapolated from 2 steps per stage" in report
    assert "| sr1_swin | 4 |" in report  # the training row, at the smoke batch
    assert report.count("| base64_swin (64x64) |") == 1
    # a run with other samplers than the defaults has its own section and file
    assert "## Efficiency: smoke preset, swin, CPU, 1 thread(s), sr1=resshift:3" in results.read_text(encoding="utf-8")
    sampling = pd.read_csv(tmp_path / "efficiency_smoke_swin_cpu1_sr1-resshift3.csv").set_index(["pipeline", "path"])
    assert sampling.loc[("cascade", "quick = defaults"), "NFE / image"] == 12
    assert sampling.loc[("single256", "quick = defaults"), "NFE / image"] == 5
    assert sampling.loc[("cascade", "quick = defaults"), "speed-up"] > sampling.loc[("cascade", "quality-checked"), "speed-up"] > 0
    # the 100-step chain ran 10 steps, its network time scaled to 100 (and its evaluations counted as 100)
    assert sampling.loc[("cascade", "quality-checked"), "timing"] == "stages of more than 10 steps extrapolated"
    assert sampling.loc[("cascade", "quick = defaults"), "timing"] == "measured"

    # verdicts (bench_samplers' rows) where the distilled base and a 2-step SR1 passed, a faster SR1 did not:
    # the quality-checked cascade takes each stage's fastest equivalent path, on the same networks
    verdict = lambda rows: pd.DataFrame(rows, columns=["path", "process", "sampler", "steps", "NFE", "equivalent"])  # noqa: E731
    verdict([["ddpm 100", "ddpm", "ddpm", 100, 100, "yes"], ["dpmpp_sde 5", "ddpm", "dpmpp_sde", 5, 5, "no"],
             ["base64_swin_distilled: ddim 2", "distilled", "ddim", 2, 2, "yes"]]).to_csv(
        bench_samplers.verdict_file(results, "smoke", "base64_swin"), index=False)
    verdict([["resshift 4", "resshift", "resshift", 4, 4, "yes"], ["resshift 1", "resshift", "resshift", 1, 1, "no"],
             ["resshift 2", "resshift", "resshift", 2, 2, "yes"]]).to_csv(
        bench_samplers.verdict_file(results, "smoke", "sr1_swin"), index=False)
    argv = ["--preset", "smoke", "--images", "2", "--batch-size", "2", "--batch-sizes", "1", "2", "--reference-steps",
            "1", "--repeats", "1", "--pipelines", "cascade", "--parts", "sampling", "--verdicts", "smoke",
            "--results", str(results)]
    report = bench_efficiency.main(argv)
    assert "| cascade | quick = defaults | dpmpp_sde 5 + resshift 4 + resshift 4 | 13 |" in report
    assert "| cascade | quality-checked | distilled ddim 2 + resshift 2 + resshift 4 | 8 |" in report
    assert "- base64: equivalence_smoke_base64_swin.csv" in report and "- sr2: no verdict: the full chain" in report
    by_batch = report.split("### The quality-checked path by batch size")[1]
    assert [row[2] for row in _rows(by_batch)] == ["1", "2"]  # pipeline, samplers, batch, s / image, peak memory
    assert "single256 |" not in report.split("### Sampling")[1] and "### Training" not in report
    assert results.read_text(encoding="utf-8").count("## Efficiency: smoke preset, swin, CPU, 1 thread(s)") == 2
    assert list(pd.read_csv(tmp_path / "efficiency_smoke_swin_cpu1.csv")["path"]) == ["quick = defaults", "quality-checked"]


def test_counting_model_counts_calls_and_images():
    counted = CountingModel(torch.nn.Identity())
    counted(torch.zeros(3, 1, 4, 4))
    counted(torch.zeros(2, 1, 4, 4))
    assert (counted.calls, counted.images) == (2, 5)


def test_peak_memory_sees_a_large_allocation_and_resets_between_blocks():
    # An anonymous memory map, written through: fresh pages that are returned on close. An allocator's
    # block (torch's, or malloc's) may come from memory an earlier test left resident, which raises no peak.
    with peak_memory(torch.device("cpu")) as big:
        with mmap.mmap(-1, 64 * 2**20) as block:  # 64 MiB
            block.write(b"\1" * len(block))
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
    assert path.read_text(encoding="utf-8") == "# Benchmark results\n\n## A\n\nthird\n\n## B\n\nsecond\n"
    update_section(path, "Last", "end")
    assert path.read_text(encoding="utf-8").endswith("## B\n\nsecond\n\n## Last\n\nend\n")
    assert markdown_table([{"x": 1.23456, "y": "a|b"}]) == "| x | y |\n|---|---|\n| 1.235 | a\\|b |"


def test_gpu_check_falls_back_to_the_cpu_and_says_so(tmp_path, capsys):
    status = gpu_check.main(["--out", str(tmp_path), "--samplers", "base64=ddpm:4"])
    assert status == 0, (tmp_path / "gpu_check_errors.txt").read_text(encoding="utf-8")
    assert "CUDA is not available: this is the CPU FALLBACK" in capsys.readouterr().out
    report = (tmp_path / "gpu_check.md").read_text(encoding="utf-8")
    assert report.startswith("## GPU check: CPU fallback (no CUDA)\n")
    results = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    bf16 = results["bf16 autocast against fp32"][0]
    assert 0 < bf16["one step: rel. error"] < gpu_check.STEP_TOLERANCE
    assert results["host syncs in the sampling loop"][0]["host syncs in the loop"] == "not checked: needs CUDA"
    for phase in ("memory format", "training throughput", "sampling throughput"):
        assert isinstance(results[phase], list) and results[phase], phase
    cascade = results["sampling throughput"][0]  # base64 as --samplers says, the SR stages their own chain (T = 4)
    assert (cascade["samplers, batch"], cascade["NFE / image"]) == ("ddpm 4 + resshift 4 + resshift 4, batch 2", 12)
    assert cascade["reference: DDPM, batch 1"] == "2000+1000+1000 steps"
    # --record puts the report into a RESULTS.md as its own section
    target = tmp_path / "RESULTS.md"
    gpu_check.record(tmp_path / "gpu_check.md", target)
    assert "## GPU check: CPU fallback (no CUDA)\n\nCUDA is not available" in target.read_text(encoding="utf-8")


@pytest.mark.slow
def test_bench_reference_training_times_both_settings_on_the_reference_network(tmp_path):
    report = bench_reference_training.main(["--stages", "sr1", "--window", "1", "--batch", "2", "--no-compile",
                                            "--no-write"])
    row = next(line for line in report.splitlines() if line.startswith("| sr1_swin |")).strip("| ").split(" | ")
    assert row[1] == "2" and "batch 2, images/s" in report and float(row[2]) > 0 and float(row[3]) > 0
    assert float(row[4]) == pytest.approx(float(row[3]) / float(row[2]), rel=1e-3)


def test_the_mutation_score_counts_mutmuts_verdicts_per_module():
    results = "\n".join([
        "    m.a.x_f__mutmut_1: killed", "    m.a.x_f__mutmut_2: survived", "    m.a.x_g__mutmut_1: timeout",
        "    m.a.x\u01c1C\u01c1__init____mutmut_1: killed", "    m.a.x_g__mutmut_2: not checked",
        "    m.b.x_h__mutmut_1: no tests", "    m.b.x_h__mutmut_2: suspicious", "    m.c.x_k__mutmut_1: not checked",
        "not a verdict line",
    ])
    counts = mutation_score.tally(results)
    assert set(counts) == {"m.a", "m.b", "m.c"}
    assert mutation_score.row("m.a", counts["m.a"]) == "| `m.a` | 4 | 2 | 1 | 1 | 0 | 0 | 1 | 75.0% |"
    assert mutation_score.row("m.b", counts["m.b"]) == "| `m.b` | 2 | 0 | 0 | 0 | 1 | 1 | 0 | 0.0% |"
    assert mutation_score.row("m.c", counts["m.c"]) == "| `m.c` | 0 | 0 | 0 | 0 | 0 | 0 | 1 | n/a |"
    assert mutation_score.HEADER.splitlines()[0].count("|") == mutation_score.row("m.a", counts["m.a"]).count("|")


def test_mutmuts_configuration_names_modules_and_tests_that_exist():
    """[tool.mutmut] in pyproject.toml: every module pattern matches a module, every test file and deselected
    test exists (a renamed file would otherwise drop out of the mutation run silently)."""
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]
    modules = [path.relative_to(root).as_posix() for source in config["source_paths"]
               for path in (root / source).rglob("*.py")]
    for pattern in config["only_mutate"]:
        assert fnmatch.filter(modules, pattern), f"only_mutate: {pattern} matches no module"
    for argument in config["pytest_add_cli_args_test_selection"]:
        path, _, test = argument.removeprefix("--deselect=").partition("::")
        assert (root / path).is_file(), argument
        assert not test or f"def {test}(" in (root / path).read_text(encoding="utf-8"), argument
