"""The study: run_all.sh end to end on the smoke preset, the study helpers, and the committed notebooks.

The metric values themselves are tested in test_metrics.py and test_evaluation.py; here we
check that the notebooks run in order, write the tables and figures a reader expects, skip
training that is done, and stop with the failing notebook's name.
"""

import ast
import json
import math
import re
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mrnet_utils.presets import preset
from mrnet_utils.data.phantom import write_phantom
from mrnet_utils.data.preprocess import preprocess
from mrnet_utils.data.slices import downsample
from mrnet_utils.errors import MRNetError
from mrnet_utils.study import data, generation, layout, training
from study_runs import error_outputs, run_all

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ["base64_swin", "base64_noswin", "sr1_swin", "sr1_noswin", "sr2_swin", "sr2_noswin", "single256_swin",
           "base64_swin_distilled", "sr1_swin_regression", "sr2_swin_regression"]
RENDERED = ["00_preprocess", *(f"01_train_{name}" for name in TRAINED), "02_pipeline", "03_sr_vs_interpolation",
            "04_generation"]
INTERPOLATIONS = ["nearest", "bilinear", "bicubic", "lanczos"]
SR_ROWS = {
    f"sr_{task}": [f"{model} ({variant}), {kind}" for variant in ("Swin", "no Swin") for kind in ("sample", "mean")]
    + [f"{model} (regression)"]
    for task, model in (("sr1_64_to_128", "SR1"), ("sr2_128_to_256", "SR2"), ("cascade_64_to_256", "SR1 + SR2"))
}
GENERATION_ROWS = ["cascade (Swin)", "cascade (no Swin)", "single-stage 256", "cascade (Swin, distilled base)",
                   "real (held-out)"]


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    result = run_all("--preset", "smoke", "--out", str(out), "--device", "cpu")
    assert result.returncode == 0, f"run_all.sh failed:\n{result.stdout}\n{result.stderr}"
    assert "study (smoke) finished in" in result.stdout
    return out


# ---------------------------------------------------------------------------
# run_all.sh end to end
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_every_notebook_is_rendered_and_ran_without_error(smoke_study):
    runs = smoke_study / "runs" / "smoke"
    assert sorted(path.stem for path in runs.glob("*.ipynb")) == sorted(RENDERED)
    for name in RENDERED:
        notebook = nbformat.read(runs / f"{name}.ipynb", as_version=4)
        assert error_outputs(notebook) == [], name
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(cell.execution_count is not None for cell in code), f"{name} has cells that did not run"
        injected = [cell for cell in code if "injected-parameters" in cell.metadata.get("tags", [])]
        assert len(injected) == 1 and "PRESET = \"smoke\"" in injected[0].source, name
    sr1 = nbformat.read(runs / "01_train_sr1_noswin.ipynb", as_version=4)
    assert "USE_SWIN = False" in next(c.source for c in sr1.cells if "injected-parameters" in c.metadata.get("tags", []))


@pytest.mark.slow
def test_every_notebook_is_also_a_page_to_read_with_its_figures_in_order(smoke_study):
    runs, results = smoke_study / "runs" / "smoke", smoke_study / "results" / "smoke"
    for name in RENDERED:
        notebook = nbformat.read(runs / f"{name}.ipynb", as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), name
        figures = sum(bool({"image/png", "image/jpeg"} & set(output.get("data", {})))
                      for cell in code for output in cell.outputs)
        assert figures >= 3, name  # drawn inline (setup_notebook), not "<Figure size ...>"
        page = runs / f"{name}.html"
        assert len(re.findall(r'src="data:image/(?:png|jpeg);base64,', page.read_text(encoding="utf-8"))) == figures, name
        assert page.stat().st_size < 2_500_000, f"{name}.html: {page.stat().st_size} bytes"
        # --device reaches every notebook that trains, samples or evaluates
        injected = next(c.source for c in code if "injected-parameters" in c.metadata.get("tags", []))
        assert ('DEVICE = "cpu"' in injected) == name.startswith(("01_", "02_", "03_")), name
    # the evaluation pages, beside the tables they wrote: the same page, its figures linked to the files there
    for page, rendered in (("sr_vs_interpolation", "03_sr_vs_interpolation"), ("generation", "04_generation")):
        linked = re.findall(r'<img [^>]*src="([^"]+)"', (results / f"{page}.html").read_text(encoding="utf-8"))
        embedded = re.findall(r'<img [^>]*src="data:image', (runs / f"{rendered}.html").read_text(encoding="utf-8"))
        assert len(linked) == len(embedded) > 0 and all((results / source).is_file() for source in linked), page


@pytest.mark.slow
def test_tables_hold_every_method_and_metric(smoke_study):
    results = smoke_study / "results" / "smoke"
    for name, models in SR_ROWS.items():
        table = pd.read_csv(results / f"{name}.csv", index_col="method")
        assert list(table.index) == [*INTERPOLATIONS, *models, "high-res (reference)"], name
        for metric in ("psnr", "ssim", "ms_ssim", "fsim", "vif", "lpips", "lpips_vgg", "ag", "ag_sobel", "ag_error",
                       "spectrum_error"):
            assert {f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"} <= set(table.columns)
        rows = table.loc[[*INTERPOLATIONS, *models]]
        assert np.isfinite(rows["psnr_mean"]).all() and np.isfinite(rows["vif_mean"]).all()
        assert (rows["seconds_per_image"] > 0).all()
        assert (table["exams"] == 2).all() and (table["slices"] == 2).all()  # smoke: 2 valid exams, 1 slice each
        assert rows["psnr_ci_low"].isna().all()  # 2 exams are too few for an interval
        # LPIPS has no backbone weights here: a reason, never a number
        assert table.loc["nearest", "lpips_mean"].startswith("not computed:")
        markdown = (results / f"{name}.md").read_text(encoding="utf-8").splitlines()
        assert markdown[2].startswith("| nearest |") and markdown[2 + len(table)] == ""
        reasons = [table.loc["nearest", "lpips_mean"], table.loc["nearest", "lpips_vgg_mean"]]
        assert markdown[3 + len(table):5 + len(table)] == [f"- [{k}] {reason}" for k, reason in enumerate(reasons, 1)]
        assert any(line.startswith("- `ag_sobel`: ") for line in markdown)  # the legend names each variant
        per_exam = pd.read_csv(results / f"{name}_per_exam.csv")
        assert {"method", "exam_id", "slices", "psnr"} <= set(per_exam.columns) and len(per_exam) == 2 * (4 + 5)
        comparisons = pd.read_csv(results / f"{name}_comparisons.csv")
        assert set(comparisons["b"]) >= {"lanczos", "bicubic"} and {"psnr", "spectrum_error"} <= set(comparisons["metric"])
        assert comparisons["verdict"].str.startswith("no interval: 2 exams < 5").all()
        # the declared primary endpoints, 2 outputs x 2 baselines x 2 metrics per task; 2 exams: no test to adjust
        primary = comparisons[comparisons["endpoint"] == "primary"]
        assert len(primary) == 8 and primary["family"].isna().all() and set(primary["metric"]) == {"psnr", "ssim"}
        assert (comparisons["endpoint"] != "primary").sum() == len(comparisons) - 8
        # Lanczos: none; regression: one per stage, SR1 + SR2 two
        assert set(primary["nfe_b"]) == {0, 2 if "cascade" in name else 1} and (primary["nfe_a"] > 0).all()

    generation = pd.read_csv(results / "generation.csv", index_col="method")
    assert list(generation.index) == GENERATION_ROWS
    assert generation.loc["cascade (Swin)", "fid"].startswith("not computed: FID needs at least 2048 samples")
    exams = pd.read_csv(results / "exams.csv")
    assert list(exams.columns) == ["exam_id", "role", "slices"] and set(exams["role"]) == {"reported"}
    generation_comparisons = pd.read_csv(results / "generation_comparisons.csv")
    assert list(generation_comparisons["metric"]) == ["histogram_w1", "spectrum_distance"] * 3
    assert generation_comparisons["verdict"].str.startswith("no interval").all()  # 2 samples, 2 real exams
    assert {"fid", "is_mean", "kid_mean", "diversity_ms_ssim", "histogram_w1", "spectrum_distance",
            "histogram_w1_ci_low", "spectrum_distance_ci_high", "diversity_ms_ssim_ci_low", "near_copy_share", "nearest_train_correlation", "train_seconds", "sample_seconds_per_image"} <= set(
        generation.columns
    )
    models = generation.loc[GENERATION_ROWS[:4]]
    assert (models["train_seconds"] > 0).all() and (models["sample_seconds_per_image"] > 0).all()
    # how each model sampled: its stages' default samplers (processes.default_sampler: the smoke preset's few
    # steps for the ddpm stages, ResShift's own chain for the SR stages, the distilled base's own 2 steps), in order
    assert list(models["samplers"]) == ["dpmpp_sde 5 + resshift 4 + resshift 4"] * 2 + ["dpmpp_sde 5",
                                                                                      "ddim 2 + resshift 4 + resshift 4"]
    # the distilled cascade's training time holds its base's rounds and the base run they learned from
    assert models.loc["cascade (Swin, distilled base)", "train_seconds"] > models.loc["cascade (Swin)", "train_seconds"]
    assert models["fid"].str.startswith("not computed:").all()
    assert np.isfinite(models["histogram_w1"]).all() and np.isfinite(models["spectrum_distance"]).all()
    # the cascade trains three stages, so its time is their sum
    training = pd.read_csv(results / "training.csv", index_col="run")
    assert sorted(training.index) == sorted(TRAINED)
    assert math.isclose(
        models.loc["cascade (Swin)", "train_seconds"],
        training.loc[["base64_swin", "sr1_swin", "sr2_swin"], "train_seconds"].sum(),
    )
    assert list(pd.read_csv(results / "data.csv", index_col="split").index) == ["train", "valid"]
    pairs = pd.read_csv(results / "sr_pairs.csv")
    assert list(pairs.columns) == ["exam_id", "slice_index"] and len(pairs) == preset("smoke").study.eval_slices


@pytest.mark.slow
def test_figures_and_samples_are_written(smoke_study):
    results = smoke_study / "results" / "smoke"
    figures = [
        "data_planes", "data_slices", "data_histograms", "samples_side_by_side", "samples_by_resolution",
        "training_losses", "generation_metrics", "generation_histograms",
        *(f"memorisation_{generator.folder}" for generator in layout.GENERATORS),
        *(f"{name}_{kind}" for name in SR_ROWS for kind in ("comparison", "metrics", "differences")),
        "generation_differences",
        *(f"training/{name}_{kind}" for name in TRAINED for kind in ("loss", "grids")),
        *(f"training/{stage}_data" for stage in ("base64", "sr1", "sr2", "single256")),  # one per stage
    ]
    for figure in figures:
        with Image.open(results / f"{figure}.png") as image:
            assert min(image.size) > 100, figure
    for generator in layout.GENERATORS:
        generated = generation.load_generated(smoke_study / "savepoints" / "smoke" / "samples" / generator.folder)
        assert generated.images[256].shape == (preset("smoke").study.samples, 1, 256, 256)
    for name in TRAINED:
        run = smoke_study / "savepoints" / "smoke" / name
        assert (run / "final.pt").is_file() and (run / "samples_final.png").is_file()
        # the notebook asked for one grid during training (SAMPLE_GRIDS), besides the final one
        assert len(list(run.glob("samples_step_*.png"))) >= 1
        record = json.loads((results / "training" / f"{name}.json").read_text(encoding="utf-8"))
        assert record["trained"] is True and record["steps"] == 6
    # the wall time of each notebook and of the whole run, for the README
    times = pd.read_csv(results / "study_times.csv").set_index("notebook")["seconds"]
    assert {"00_preprocess", "02_pipeline", "04_generation", "total"} <= set(times.index)
    assert all(f"01_train_{name}" in times.index for name in TRAINED)
    assert times["total"] >= times.drop("total").sum() - len(times)  # rounding: at most 1 s per notebook


@pytest.mark.slow
def test_second_run_skips_finished_training(smoke_study):
    final = smoke_study / "savepoints" / "smoke" / "single256_swin" / "final.pt"
    before = final.stat().st_mtime_ns
    result = run_all("--preset", "smoke", "--only", "single256", "--out", str(smoke_study))
    assert result.returncode == 0, result.stderr
    assert "01_train_single256_swin.ipynb" in result.stdout and "02_pipeline" not in result.stdout
    assert final.stat().st_mtime_ns == before
    record = json.loads((smoke_study / "results" / "smoke" / "training" / "single256_swin.json").read_text(encoding="utf-8"))
    assert record["trained"] is False and record["steps"] == 6 and record["seconds"] > 0
    rendered = (smoke_study / "runs" / "smoke" / "01_train_single256_swin.ipynb").read_text(encoding="utf-8")
    assert "training skipped" in rendered


@pytest.mark.slow
def test_a_study_run_leaves_the_checkout_clean(smoke_study):
    """What run_all.sh writes under --out (by default the repository), for every part run above, is what git
    ignores there and tracks none of: so a study run never changes the committed record in
    evaluation/results/ (only --refresh-results does), and the README's two commands pass in either order."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: what git ignores is unknown")
    written = {path.relative_to(smoke_study).as_posix() for path in smoke_study.rglob("*") if path.is_file()}
    assert {"results/smoke/study_times.csv", "results/smoke/sr_sr1_64_to_128.csv"} <= written
    assert sorted(written & set(tracked.stdout.splitlines())) == []
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(sorted(written)),
                             capture_output=True, text=True).stdout.splitlines()
    assert sorted(written - set(ignored)) == []


def test_help_shows_every_option_and_part_on_stdout():
    script = (ROOT / "run_all.sh").read_text(encoding="utf-8")
    accepted = {option for case in re.findall(r"^ +(-[-\w|]+)\)", script, re.M) for option in case.split("|")}
    parts = re.search(r"choose from: (.*)", run_all("--only", "nothing").stderr).group(1).split()
    for flag in ("--help", "-h"):
        result = run_all(flag)
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout.startswith("Usage: bash run_all.sh [OPTION]...\n")
        listed = set(re.findall(r"^ {2}(-[-\w]+)(?:, (--[-\w]+))?", result.stdout, re.M))
        assert {option for pair in listed for option in pair if option} == accepted
        described = result.stdout.split("Parts:")[1].split("\n\n")[0]
        assert list(dict.fromkeys(word for word in re.findall(r"\w+", described) if word in parts)) == parts


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    result = run_all("--preset", "smoke", "--only", "sr3", "--out", str(tmp_path))
    assert result.returncode == 2 and "--only sr3 is not a part of the study; choose from: preprocess base64" in result.stderr
    result = run_all("--preset", "huge", "--out", str(tmp_path))
    assert result.returncode == 2 and "--preset must be one of: smoke demo gpu full reference (not 'huge')" in result.stderr
    result = run_all("--preset", "smoke", "--device", "gpu0", "--out", str(tmp_path))
    assert result.returncode == 2 and "--device must be cpu, cuda or cuda:N (not 'gpu0')" in result.stderr
    result = run_all("--preset", "smoke", "--gpus", "0", "--out", str(tmp_path))
    assert result.returncode == 2 and "--gpus must be a positive number of GPUs (not '0')" in result.stderr
    result = run_all("--preset", "smoke", "--eval-slices", "0", "--out", str(tmp_path))
    assert result.returncode == 2 and "--eval-slices must be a positive number of slices (not '0')" in result.stderr
    result = run_all("--preset", "smoke", "--tuning-exams", "two", "--out", str(tmp_path))
    assert result.returncode == 2 and "--tuning-exams must be a number of exams (not 'two')" in result.stderr
    result = run_all("--preset", "smoke", "--out")
    assert result.returncode == 2 and result.stderr == "error: --out needs a value (bash run_all.sh --help lists every option)\n"
    result = run_all("--preset", "smoke", "--outdir", str(tmp_path))
    assert result.returncode == 2 and "error: unknown option --outdir" in result.stderr and result.stdout == ""
    assert not (tmp_path / "runs").exists()  # refused before anything was written


# ---------------------------------------------------------------------------
# The committed notebooks
# ---------------------------------------------------------------------------


def committed_notebooks() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:  # not a git checkout (e.g. an unpacked archive): check what is there
        return sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("evaluation/*.ipynb"))
    return [ROOT / name for name in listed.stdout.split()]


def test_committed_notebooks_carry_no_outputs():
    notebooks = committed_notebooks()
    assert {path.relative_to(ROOT).as_posix() for path in notebooks} >= {
        "notebooks/00_preprocess.ipynb", "notebooks/01_train_stage.ipynb", "notebooks/02_pipeline.ipynb",
        "evaluation/sr_vs_interpolation.ipynb", "evaluation/generation.ipynb",
    }
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} carries outputs"
    assert "*.ipynb filter=nbstripout" in (ROOT / ".gitattributes").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", committed_notebooks(), ids=lambda path: path.name)
def test_notebooks_are_thin(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata.kernelspec.name == "mrnet-diffusion"  # scripts/setup_env.sh registers it
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    parameters = code[0]
    assert parameters.metadata.get("tags") == ["parameters"]
    # the parameters cell holds UPPERCASE constants only, so papermill can override each one
    for statement in ast.parse(parameters.source).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1
        name = statement.targets[0].id
        assert name.isupper(), name
        ast.literal_eval(statement.value)
    for cell in code[1:]:
        tree = ast.parse(cell.source)
        defined = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert defined == [], f"{path.name} defines code; it belongs in mrnet_utils"
        assert "sys.path" not in cell.source and "exec(" not in cell.source and "globals()" not in cell.source


# ---------------------------------------------------------------------------
# Study helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    root = write_phantom(folder / "phantom", train_exams=2, valid_exams=2, progress=False)
    return preprocess(root, "coronal", folder / "slices.npz", central_slices=2, progress=False)


def test_study_paths_put_each_part_in_its_place(tmp_path):
    paths = layout.StudyPaths(tmp_path, "demo")
    assert paths.cache("coronal") == tmp_path / "data" / "demo" / "slices_coronal.npz"
    assert paths.run("sr1", False) == tmp_path / "savepoints" / "demo" / "sr1_noswin"
    assert paths.samples(layout.GENERATORS[0]) == tmp_path / "savepoints" / "demo" / "samples" / "cascade_swin"
    assert paths.results == tmp_path / "results" / "demo"
    with pytest.raises(MRNetError, match="unknown preset"):
        layout.StudyPaths(tmp_path, "tiny")
    with pytest.raises(MRNetError, match=r"no final checkpoint .*: sr2_swin of the demo study is not trained yet"):
        training.find_run(paths, "sr2", True)


def test_sample_grids_fall_evenly_before_the_last_step():
    cfg = training.training_config("base64", "demo", True, sample_grids=2)
    steps, every = cfg.train.steps, cfg.train.sample_every
    assert [step for step in range(1, steps + 1) if step % every == 0] == [81, 162]  # 240 steps
    assert training.training_config("sr1", "demo", False, sample_grids=0).train.sample_every == 0
    with pytest.raises(MRNetError, match="sample_grids"):
        training.training_config("sr1", "demo", False, sample_grids=-1)


def test_held_out_pairs_match_the_training_resolution_chain(tiny_cache):
    held = data.held_out(tiny_cache, 3)
    assert held.images.shape == (3, 1, 256, 256)
    assert list(held.pairs().columns) == ["exam_id", "slice_index"]
    assert set(held.exam_ids) == {2, 3}  # the valid exams, both covered by the even spread
    # as training makes SR inputs: 256 -> 128 -> 64, each anti-aliased
    torch.testing.assert_close(held.at(128), downsample(held.images, 128))
    torch.testing.assert_close(held.at(64), downsample(downsample(held.images, 128), 64))
    assert len(data.held_out(tiny_cache, None).images) == 4
    with pytest.raises(MRNetError, match="cannot take shape"):
        held.at(100)


def test_slice_examples_put_the_sr_condition_above_its_target(tiny_cache):
    images, labels = data.slice_examples(tiny_cache, 128, 2, low_resolution=64)
    assert images.shape == (4, 1, 128, 128) and labels[:2] == ["input 64", "input 64"]
    assert labels[2].startswith("exam 0000 / ")
    # the condition is the target, downsampled and upsampled back: close, but blurred
    assert 0 < (images[:2] - images[2:]).abs().mean() < 0.2


def test_write_record_stores_paths_as_text_and_nan_as_null(tmp_path):
    run = training.StageRun("sr1_swin", tmp_path / "run", False, 6, 1.5, math.nan)
    path = layout.write_record(tmp_path / "records" / "sr1_swin.json", run)
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "name": "sr1_swin", "run_dir": str(tmp_path / "run"), "trained": False, "steps": 6, "seconds": 1.5,
        "images_per_second": None,
    }


def test_generated_samples_round_trip_at_every_resolution_and_refuse_incomplete_or_old_records(tmp_path):
    images = torch.linspace(-1, 1, 2 * 256 * 256).reshape(2, 1, 256, 256)
    low = torch.linspace(-1, 1, 2 * 64 * 64).reshape(2, 1, 64, 64)
    generated = generation.Generated({256: images, 64: low}, 0.5, [3, 4], "dpmpp_sde 25 + resshift 4 + resshift 4")
    folder = generation.save_generated(generated, tmp_path / "cascade")
    loaded = generation.load_generated(folder)
    assert loaded.samplers == generated.samplers and loaded.seeds == [3, 4] and loaded.seconds_per_image == 0.5
    assert torch.equal(loaded.images[256], images) and torch.equal(loaded.images[64], low)
    again = generation.save_generated(generation.Generated({256: -images}, 0.25, [3, 4], "ddpm 100"), folder)
    assert sorted(generation.load_generated(again).images) == [256]  # the new set replaced the old one whole
    with pytest.raises(MRNetError, match="samples folder .*none does not exist; generate them again"):
        generation.load_generated(tmp_path / "none")
    (folder / "samples_128.npy").write_bytes(b"stray")  # a file the set does not list is not read
    assert sorted(generation.load_generated(folder).images) == [256]
    # a record written before the samplers were recorded: an error that says what to rerun, not a KeyError
    record = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
    del record["samplers"]
    (folder / "samples.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(MRNetError, match="samples folder"):  # its size changed since the set was sealed
        generation.load_generated(folder)


def test_fid_compares_with_the_training_split_where_the_held_out_slices_are_too_few():
    few, many = torch.zeros(600, 1, 4, 4), torch.zeros(5650, 1, 4, 4)
    name, reference = generation.fid_reference(few, many)
    assert name == "training split" and reference is many
    assert generation.fid_reference(many, many) is None and generation.fid_reference(few, few) is None


def test_the_preset_tuning_exams_leave_enough_exams_to_report_on(tiny_cache, monkeypatch):
    assert data.tuning_count(tiny_cache, preset_count=1) == 0  # 2 valid exams: fewer than 6 to report on already
    assert data.tuning_count(tiny_cache, preset_count=1, requested=1) == 1  # an explicit count is taken as given
    monkeypatch.setattr(data, "MIN_REPORTED_EXAMS", 1)
    assert data.tuning_count(tiny_cache, preset_count=5) == 1 and data.tuning_count(tiny_cache, 0) == 0
    roles = data.exam_roles(tiny_cache, 1)
    assert roles.to_dict("list") == {"exam_id": [2, 3], "role": ["tuning", "reported"], "slices": [2, 2]}
    assert set(data.held_out(tiny_cache, None, tuning=1).exam_ids) == {3}
    assert set(data.held_out(tiny_cache, None, exams="tune", tuning=1).exam_ids) == {2}

