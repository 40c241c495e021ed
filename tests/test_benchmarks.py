"""Smoke runs of the benchmark scripts on tiny checkpoints, so that they cannot rot.

Each script runs in-process through its `main(argv)` with the smoke preset and the smallest
settings; the tests check what the tables must say (counted network evaluations, the
reference row's zero differences, the sections written to a RESULTS.md), not timings.
"""

from __future__ import annotations

import argparse
import ast
import json
import mmap
import subprocess
import types

import pandas as pd
import pytest
import torch
from torch_threads import one_thread

from benchmarks import bench_efficiency, bench_guidance, bench_reference_training, bench_samplers, gpu_check, mutation
from benchmarks.common import (
    CountingModel,
    markdown_table,
    parse_sampler,
    peak_memory,
    stage_sampler,
)
from benchmarks.sections import update_section
from mrnet_utils.errors import MRNetError
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
    results.write_text("# Benchmark results\n\n## Other section\n\nkept\n")
    argv = ["--data", str(tiny_cache), "--checkpoints", str(savepoints), "--stages", "base64", "sr1",
            "--samplers", "ddim:5", "dpmpp:3", "resshift:2", "--tuning-exams", "1", "--base-images", "6",
            "--batch-size", "6", "--results", str(results)]
    report = bench_samplers.main(argv)
    base, sr1 = report.split("## Samplers: ")[1:]
    # the chain first, then the candidates the stage's process takes
    assert [row[0] for row in _rows(base)] == ["ddpm 100", "ddim 5", "dpmpp 3"]
    assert [row[0] for row in _rows(sr1)] == ["resshift 4", "resshift 2"]
    assert "dhistogram_w1 [90% CI]" in base and "ddiversity [90% CI]" in base and "dpsnr [90% CI]" in sr1
    chain = _rows(sr1)[0]
    assert chain[3].startswith("+0 [") and chain[3].endswith("nan, +nan]")  # itself; 1 tuning exam: no interval
    # with one tuning exam there is no interval, so nothing can be shown equivalent
    assert all(row[-1] == "no" for row in _rows(base) + _rows(sr1))
    assert report.count("**Fewest network evaluations equivalent to the chain: ") == 2
    assert "1 tuning exams" in sr1
    written = results.read_text()
    assert "## Other section\n\nkept" in written
    for stage in ("base64_swin", "sr1_swin"):  # a section each, so that stages can be rerun one at a time
        assert f"## Samplers: {stage}, smoke checkpoints, CPU" in written
    assert "python -m benchmarks.bench_samplers --data" in written and "load average at start" in written
    with pytest.raises(MRNetError, match="no valid slices to tune on"):
        bench_samplers.main(argv[:-2] + ["--no-write"] + argv[-2:][:0] + ["--tuning-exams", "0"])


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
    assert title in results.read_text() and "python -m benchmarks.bench_guidance --data" in results.read_text()
    with pytest.raises(MRNetError, match="request {'acl': 1, 'meniscus': 0} is not one label set to 1 or 0"):
        bench_guidance.main([*argv[:7], "acl=1,meniscus=0", *argv[9:], "--no-write"])
    with pytest.raises(MRNetError, match="unknown label 'knee'"):
        bench_guidance.parse_args(["--requests", "knee=1"])


def test_bench_samplers_fp32_precision_changes_nothing_on_a_cpu_and_restores_tf32(tiny_cache, savepoints):
    """--precision fp32 only turns off bf16 autocast and TF32, which a CPU never uses: same samples, same table."""
    argv = ["--data", str(tiny_cache), "--checkpoints", str(savepoints), "--stages", "sr1", "--samplers",
            "resshift:2", "--tuning-exams", "1", "--batch-size", "2", "--no-write"]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    def table(report: str) -> list[list[str]]:  # the rows without the timing column
        return [row[:2] + row[3:] for row in _rows(report)]

    default, fp32 = (table(bench_samplers.main(argv + extra)) for extra in ([], ["--precision", "fp32"]))
    assert len(default) == 2 and default == fp32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == tf32


def test_the_default_is_the_fewest_evaluations_found_equivalent():
    rows = [
        {"sampler": "ddpm 1000", "NFE": 1000, "equivalent": "yes"},
        {"sampler": "ddim 50", "NFE": 50, "equivalent": "yes"},
        {"sampler": "dpmpp 10", "NFE": 10, "equivalent": "no"},
        {"sampler": "dpmpp 15", "NFE": 15, "equivalent": "yes"},
    ]
    assert bench_samplers.fewest_steps(rows) == "dpmpp 15"
    tie = [rows[0], {"sampler": "ddpm 100", "NFE": 100, "equivalent": "yes"},
           {"sampler": "dpmpp_sde 100", "NFE": 100, "equivalent": "yes"}]
    assert bench_samplers.fewest_steps(tie) == "dpmpp_sde 100"  # how single256's default was settled
    assert bench_samplers.fewest_steps([rows[0], rows[2]]).startswith("ddpm 1000 (no faster sampler equivalent)")


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
            "--train-window", "1", "--repeats", "1", "--train-stages", "sr1", "--samplers", "sr1=resshift:3",
            "--results", str(results)]
    report = bench_efficiency.main(argv)
    # each stage samples with its default (the smoke preset's 5 SDE steps for the generating stages, the
    # residual SR stages' 4-step chain), sr1 here in 3: 5 + 3 + 4
    assert "| cascade | dpmpp_sde 5 + resshift 3 + resshift 4 | 12 |" in report
    assert "| single256 | dpmpp_sde 5 | 5 |" in report
    assert "| 2000+1000+1000 steps |" in report and "extrapolated from 2 steps per stage" in report
    assert "| sr1_swin | 4 |" in report  # the training row, at the smoke batch
    assert report.count("| base64_swin (64x64) |") == 1
    # a run with other samplers than the defaults has its own section and file
    assert "## Efficiency: smoke preset, swin, CPU, 1 thread(s), sr1=resshift:3" in results.read_text()
    sampling = pd.read_csv(tmp_path / "efficiency_smoke_swin_cpu1_sr1-resshift3.csv").set_index("pipeline")
    assert sampling.loc["cascade", "NFE / image"] == 12 and sampling.loc["single256", "NFE / image"] == 5
    assert sampling.loc["cascade", "speed-up"] > 0

    # the defaults, one pipeline, no training: a section and a file beside the other run's
    argv = ["--preset", "smoke", "--images", "1", "--batch-size", "1", "--reference-steps", "1", "--repeats", "1",
            "--pipelines", "cascade", "--parts", "sampling", "--results", str(results)]
    report = bench_efficiency.main(argv)
    assert "| cascade | dpmpp_sde 5 + resshift 4 + resshift 4 | 13 |" in report
    assert "single256 |" not in report.split("### Sampling")[1] and "### Training" not in report
    assert results.read_text().count("## Efficiency: smoke preset, swin, CPU, 1 thread(s)") == 2
    assert list(pd.read_csv(tmp_path / "efficiency_smoke_swin_cpu1.csv")["pipeline"]) == ["cascade"]


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
    assert path.read_text() == "# Benchmark results\n\n## A\n\nthird\n\n## B\n\nsecond\n"
    update_section(path, "Overview", "of B", before="B")
    update_section(path, "Overview", "of all B", before="B")
    update_section(path, "Last", "end", before="Z")  # no section starts with Z
    assert path.read_text().startswith("# Benchmark results\n\n## A\n\nthird\n\n## Overview\n\nof all B\n\n## B\n")
    assert path.read_text().endswith("## B\n\nsecond\n\n## Last\n\nend\n")
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
    cascade = results["sampling throughput"][0]  # base64 as --samplers says, the SR stages their chain in 2 steps
    assert (cascade["samplers, batch"], cascade["NFE / image"]) == ("ddpm 4 + resshift 2 + resshift 2, batch 2", 8)
    # --record puts the report into a RESULTS.md as its own section
    target = tmp_path / "RESULTS.md"
    gpu_check.record(tmp_path / "gpu_check.md", target)
    assert "## GPU check: CPU fallback (no CUDA)\n\nCUDA is not available" in target.read_text()


@pytest.mark.slow
def test_bench_reference_training_times_both_settings_on_the_reference_network(tmp_path):
    report = bench_reference_training.main(["--stages", "sr1", "--window", "1", "--batch", "2", "--no-compile",
                                            "--no-write"])
    row = next(line for line in report.splitlines() if line.startswith("| sr1_swin |")).strip("| ").split(" | ")
    assert row[1] == "2" and "batch 2, images/s" in report and float(row[2]) > 0 and float(row[3]) > 0
    assert float(row[4]) == pytest.approx(float(row[3]) / float(row[2]), rel=1e-3)


def test_the_mutation_summary_adds_up_the_module_sections(tmp_path):
    def module(path, counts, commit, unjudged, not_run=()):
        outcome = mutation.Outcome(path, mutation.Target(path, ("tests/test_x.py",), {"m.x_f__mutmut_1": "equivalent"}),
                                   60.0, counts, {name: "-a\n+b" for name, status in counts.items()
                                                  if status == "survived"}, [commit], list(not_run))
        body = mutation.section(outcome, "a machine", "python -m benchmarks.mutation", "mutmut 3.8.1, 2 worker(s)")
        assert body.count(": not yet judged") == unjudged and "Tool: mutmut 3.8.1, 2 worker(s)." in body
        mutation.update_section(results, f"Mutation testing: {path}", body)

    results = tmp_path / "RESULTS.md"
    module("m/one.py", {"m.x_f__mutmut_1": "survived", "m.x_f__mutmut_2": "killed", "m.x_g__mutmut_1": "timeout"},
           "abc1234", 0)
    module("m/two.py", {"m.x_h__mutmut_1": "survived", "m.x_h__mutmut_2": "no tests"}, "def5678", 1,
           not_run=["m.x_h__mutmut_3", "m.x_k__mutmut_1", "m.x_h__mutmut_4"])
    assert "Stopped at its time limit: 3 more mutants not run, so not counted above: `x_h` (2), `x_k` (1)." in (
        results.read_text())
    rows = mutation.summary(results.read_text()).splitlines()
    assert rows[2:] == [
        "| `m/one.py` | abc1234 | 3 | 1 | 1 | 1 | 0 | 66.7% | 1.0 | 0 |",
        "| `m/two.py` (partial) | def5678 | 2 | 0 | 0 | 1 | 1 | 0.0% | 1.0 | 1 |",
        "| all | | 5 | 1 | 1 | 2 | 1 | 40.0% | | |",
    ]


def test_a_function_target_runs_only_its_functions_and_its_section_names_them(tmp_path):
    target = mutation.Target("m/x.py", ("tests/test_x.py",), functions=("x_f", "xǁCǁg"))
    assert target.covers("m.x.x_f__mutmut_3") and target.covers("m.x.xǁCǁg__mutmut_12")
    assert not target.covers("m.x.x_ff__mutmut_1") and not target.covers("m.x.x_g__mutmut_1")
    assert mutation.Target("m/x.py", ()).covers("m.x.x_ff__mutmut_1")
    assert target.title == "m/x.py: `x_f`, `xǁCǁg`"
    results = tmp_path / "RESULTS.md"
    outcome = mutation.Outcome("x", target, 120.0, {"m.x.x_f__mutmut_1": "killed", "m.x.x_f__mutmut_2": "killed"}, {},
                               ["abc1234", "abc1234", "def5678"], ["m.x.xǁCǁg__mutmut_1"])
    body = mutation.section(outcome, "a machine", "python -m benchmarks.mutation", "mutmut 3.8.1, 2 worker(s)")
    assert ("Command of the latest run (from the repository root): `python -m benchmarks.mutation`, at commit abc1234 "
            "(in 3 runs, continued at def5678 with the module unchanged, whose tests ran against the mutants left; "
            "minutes are of all of them).") in body and body.startswith("Date of the latest run: ")
    update_section(results, f"Mutation testing: {target.title}", body)
    assert mutation.summary(results.read_text()).splitlines()[2] == (
        "| `m/x.py`: `x_f`, `xǁCǁg` (partial) | abc1234 | 2 | 2 | 0 | 0 | 0 | 100.0% | 2.0 | 0 |")
    other = mutation.Target("m/x.py", (), functions=("x_h",))  # the module's other functions: no mutant in both
    update_section(results, f"Mutation testing: {other.title}", mutation.section(
        mutation.Outcome("x", other, 60.0, {"m.x.x_h__mutmut_1": "killed"}, {}, ["abc1234"]), "a machine", "cmd", "mutmut"))
    assert "share functions" not in mutation.summary(results.read_text())
    whole = mutation.Outcome("x", mutation.Target("m/x.py", ()), 60.0, {"m.x.x_f__mutmut_1": "killed"}, {}, ["abc1234"])
    update_section(results, "Mutation testing: m/x.py", mutation.section(whole, "a machine", "cmd", "mutmut"))
    rows = mutation.summary(results.read_text()).splitlines()
    assert rows[-3] == "| all | | 4 | 4 | 0 | 0 | 0 | 100.0% | | |"
    assert rows[-1] == ("`m/x.py` has sections that share functions (a run of the whole module and one of some of its "
                        "functions): a mutant run in both counts in both rows, and twice in 'all'.")
    overlapping = tmp_path / "overlapping.md"
    for functions in (("x_f", "x_h"), ("x_h",)):
        target = mutation.Target("m/y.py", (), functions=functions)
        update_section(overlapping, f"Mutation testing: {target.title}", mutation.section(
            mutation.Outcome("y", target, 60.0, {"m.y.x_h__mutmut_1": "killed"}, {}, ["abc1234"]), "m", "c", "t"))
    assert mutation.summary(overlapping.read_text()).splitlines()[-1].startswith("`m/y.py` has sections that share")


def test_a_partial_run_points_at_the_target_that_runs_its_functions_left_on_their_own(monkeypatch):
    whole, rest = mutation.Target("m/x.py", ()), mutation.Target("m/x.py", (), functions=("x_f", "x_g"))
    monkeypatch.setattr(mutation, "MODULES", {"x": whole, "x_slow": rest})
    not_run = ["m.x.x_f__mutmut_1", "m.x.x_g__mutmut_1"]
    body = mutation.section(mutation.Outcome("x", whole, 60.0, {}, {}, ["abc1234"], not_run), "a machine", "cmd",
                            "mutmut")
    assert "`--modules x_slow` runs `x_f`, `x_g` on their own." in body
    one_left = mutation.section(mutation.Outcome("x", whole, 60.0, {}, {}, ["abc1234"], not_run[:1]), "a machine",
                                "cmd", "mutmut")
    assert "`--resume` continues the run." in one_left and "x_slow" not in one_left


def test_the_loops_two_targets_split_its_functions_between_them():
    """Each function mutmut mutates (it leaves decorated ones) is in one of the two, named as mutmut names it."""
    rest, train = mutation.MODULES["loop_rest"], mutation.MODULES["loop_train"]
    assert rest.path == train.path and rest.tests == train.tests and not set(rest.functions) & set(train.functions)
    tree = ast.parse((mutation.ROOT / rest.path).read_text())
    names = {f"x_{node.name}" for node in tree.body if isinstance(node, ast.FunctionDef) and not node.decorator_list}
    names |= {f"x\u01c1{node.name}\u01c1{method.name}" for node in tree.body if isinstance(node, ast.ClassDef)
              for method in node.body if isinstance(method, ast.FunctionDef) and not method.decorator_list}
    assert set(rest.functions) | set(train.functions) == names


def test_a_lost_test_map_is_told_from_a_function_no_test_calls():
    codes = {"m.x_f__mutmut_1": 1, "m.x_f__mutmut_2": 33, "m.x_g__mutmut_1": 33, "m.x_g__mutmut_2": None,
             "m.x_h__mutmut_1": 0, "m.x_h__mutmut_2": 5, "m.x_k__mutmut_1": 36, "m.x_k__mutmut_2": None}
    assert mutation._spurious_no_tests(codes) == ["m.x_f__mutmut_2", "m.x_h__mutmut_2"]


def test_a_saved_run_seeds_a_fresh_copy_only_while_the_module_is_unchanged(tmp_path):
    target = mutation.Target("m/x.py", ())
    (tmp_path / "m").mkdir()
    (tmp_path / "m/x.py").write_text("def f():\n    return 1\n")
    codes = {"m.x.x_f__mutmut_1": 1, "m.x.x_f__mutmut_2": None}
    saved = {"source_sha256": mutation._source_hash(tmp_path / "m/x.py"), "runs": ["abc1234"],
             "exit_code_by_key": codes, "hash_by_function_name": {"x_f": "0f0f"}}
    mutation._seed(tmp_path, target, saved)
    meta = json.loads((tmp_path / "mutants/m/x.py.meta").read_text())
    assert meta == {"exit_code_by_key": codes, "hash_by_function_name": {"x_f": "0f0f"}, "durations_by_key": {},
                    "estimated_durations_by_key": {}}
    (tmp_path / "m/x.py").write_text("def f():\n    return 2\n")
    with pytest.raises(SystemExit, match=r"m/x\.py changed since its saved run \(commit abc1234\)"):
        mutation._seed(tmp_path, target, saved)


def test_a_render_from_the_saved_state_reports_the_run_that_ran_the_mutants(tmp_path, monkeypatch):
    """`--minutes 0 --resume` writes the section of the saved run: its day, machine, command and tool, not its own."""
    monkeypatch.setattr(mutation, "STATE", tmp_path / "state")
    target, module = mutation.MODULES["schedules"], "mrnet_utils.diffusion.schedules"
    killed, survived = f"{module}.x_snr__mutmut_1", f"{module}.x_snr__mutmut_2"
    ran = {"day": "2026-11-30", "machine": "a machine", "command": "python -m benchmarks.mutation --modules schedules",
           "tool": "mutmut 3.8.1, 2 worker(s)"}
    render = {"day": "2026-12-01", "machine": "another", "command": "python -m benchmarks.mutation --minutes 0",
              "tool": "mutmut"}
    saved = {"module": target.path, "source_sha256": mutation._source_hash(mutation.ROOT / target.path),
             "runs": ["abc1234"], "seconds": 90.0, "latest_run": ran, "hash_by_function_name": {},
             "exit_code_by_key": {killed: 1, survived: 0}, "diffs": {survived: "-a\n+b"}}
    (tmp_path / "state").mkdir()
    (tmp_path / "state/schedules.json").write_text(json.dumps(saved))
    outcome = mutation.run_module("schedules", tmp_path / "work", 2, minutes=0, resume=True, this_run=render)
    assert outcome.latest_run == ran and outcome.runs == ["abc1234"] and outcome.seconds == 90.0
    assert outcome.statuses == {killed: "killed", survived: "survived"} and outcome.diffs == {survived: "-a\n+b"}
    assert json.loads((tmp_path / "state/schedules.json").read_text())["latest_run"] == ran
    body = mutation.section(outcome, **outcome.latest_run)
    assert body.startswith("Date: 2026-11-30. Tool: mutmut 3.8.1, 2 worker(s). Machine: a machine.\n\n"
                           "Command (from the repository root): `python -m benchmarks.mutation --modules schedules`, "
                           "at commit abc1234.")
    # A state saved before runs were recorded: the render can only describe itself.
    (tmp_path / "state/schedules.json").write_text(json.dumps({**saved, "latest_run": None}))
    assert mutation.run_module("schedules", tmp_path / "work", 2, minutes=0, resume=True,
                               this_run=render).latest_run == render


def test_a_recheck_runs_again_only_the_survivors_noted_as_killed_later_and_says_what_it_found(tmp_path, monkeypatch):
    module = "mrnet_utils.diffusion.schedules"
    later, wrong, equivalent, unjudged, killed = (f"{module}.x_snr__mutmut_{n}" for n in range(1, 6))
    target = mutation.Target(mutation.MODULES["schedules"].path, ("tests/test_diffusion.py",), {
        later: "killed by `test_a` (tests/test_x.py), written after this run", wrong: "killed by `test_b`, later",
        equivalent: "equivalent: ..."})
    monkeypatch.setitem(mutation.MODULES, "schedules", target)
    monkeypatch.setattr(mutation, "STATE", tmp_path / "state")
    codes = {later: 0, wrong: 0, equivalent: 0, unjudged: 0, killed: 1}
    saved = {"module": target.path, "source_sha256": mutation._source_hash(mutation.ROOT / target.path),
             "runs": ["abc1234"], "seconds": 90.0, "latest_run": None, "hash_by_function_name": {},
             "exit_code_by_key": codes, "diffs": {mutant: "-a\n+b" for mutant, code in codes.items() if code == 0}}
    (tmp_path / "state").mkdir()
    (tmp_path / "state/schedules.json").write_text(json.dumps(saved))
    asked = []

    class Mutmut:  # gives the named mutants their verdicts at HEAD: `later` is killed, `wrong` survives again
        def __init__(self, command, cwd, **kwargs):
            names = command[command.index("--max-children") + 2:]
            asked.append(names)
            meta_path = cwd / "mutants" / (target.path + ".meta")
            meta = json.loads(meta_path.read_text())
            for name in names:
                meta["exit_code_by_key"][name] = {later: 1, wrong: 0}[name]
                meta["durations_by_key"][name] = 2.0
            meta_path.write_text(json.dumps(meta))

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(mutation, "subprocess", types.SimpleNamespace(
        run=subprocess.run, Popen=Mutmut, STDOUT=subprocess.STDOUT, TimeoutExpired=subprocess.TimeoutExpired))
    this_run = {"day": "2026-12-01", "machine": "a machine", "command": "python -m benchmarks.mutation --recheck",
                "tool": "mutmut"}
    outcome = mutation.run_module("schedules", tmp_path / "work", 2, minutes=5, this_run=this_run, recheck=True)
    head = (tmp_path / "work/schedules" / mutation._COMMIT).read_text().strip()
    assert asked == [[later, wrong]] and outcome.rechecked == {later: head, wrong: head}
    assert outcome.statuses == {later: "killed", wrong: "survived", equivalent: "survived", unjudged: "survived",
                                killed: "killed"}
    assert outcome.runs == ["abc1234"] and outcome.latest_run == this_run and outcome.seconds > 90.0
    state = json.loads((tmp_path / "state/schedules.json").read_text())
    assert state["rechecked"] == {later: head, wrong: head} and state["exit_code_by_key"][later] == 1
    body = mutation.section(outcome, **outcome.latest_run)
    assert (f"Rechecked at {head}: 2 of the survivors, noted as killed by a test written after their run, ran again "
            "against that commit's tests; 1 were killed.") in body
    assert (f"- `x_snr__mutmut_2`: not yet judged: noted as killed by `test_b`, later, but it survived the recheck at "
            f"{head}") in body and "- `x_snr__mutmut_1`" not in body and body.count(": not yet judged") == 2
