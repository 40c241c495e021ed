"""The command line: every stage and variant trains, both pipelines sample, bad input gives one line."""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrnet_utils import cli
from mrnet_utils.presets import default_sampler, stage_config
from mrnet_utils.stages import STAGES
from mrnet_utils.training.checkpoint import FINAL_CHECKPOINT, load_checkpoint
from mrnet_utils.training.log import LOG_FILE

pytestmark = pytest.mark.slow  # trains eight models (seconds each)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("use_swin", [True, False], ids=["swin", "noswin"])
@pytest.mark.parametrize("stage", STAGES)
def test_train_smoke_for_every_stage_and_variant(smoke_run, stage, use_swin):
    run = smoke_run(stage, use_swin)
    assert run.exit_code == 0
    files = {path.name for path in run.folder.iterdir()}
    assert {FINAL_CHECKPOINT, "step_00000003.pt", LOG_FILE, "samples_final.png"} <= files
    final = load_checkpoint(run.folder / FINAL_CHECKPOINT)
    assert final["step"] == run.steps
    assert (final["config"]["stage"], final["config"]["unet"]["use_swin"]) == (stage, use_swin)
    assert (final["config"]["preset"], final["config"]["train"]["steps"]) == ("smoke", run.steps)


def check_samples(folder, n):
    """samples.npy holds n finite (1, 256, 256) images in [-1, 1]; each PNG is its 8-bit rendering."""
    samples = np.load(folder / "samples.npy")
    assert samples.shape == (n, 1, 256, 256) and samples.dtype == np.float32
    assert np.isfinite(samples).all() and samples.min() >= -1 and samples.max() <= 1
    assert samples.std() > 0.01  # not a blank image
    for i in range(n):
        png = np.asarray(Image.open(folder / f"sample_{i:06d}.png"))
        assert png.shape == (256, 256) and png.dtype == np.uint8
        assert np.abs(png.astype(float) - (samples[i, 0] + 1) * 127.5).max() <= 0.5 + 1e-3
    assert not np.array_equal(samples[0], samples[1])  # different seeds, different images
    assert (folder / "grid.png").is_file()


def test_sample_cascade_from_the_three_run_folders(smoke_run, capsys, tmp_path):
    runs = [smoke_run(stage).folder for stage in ("base64", "sr1", "sr2")]
    code, out, err = run_cli(capsys, "sample", "--pipeline", "cascade", "--checkpoints", *runs, "--n", 2,
                             "--device", "cpu", "--out", tmp_path)
    assert code == 0, err
    assert out.strip().endswith(f"wrote 2 samples to {tmp_path}")
    check_samples(tmp_path, 2)


def test_sample_single256_with_a_sampler_override(smoke_run, capsys, tmp_path):
    checkpoint = smoke_run("single256", use_swin=False).folder / FINAL_CHECKPOINT
    command = ["sample", "--pipeline", "single256", "--checkpoints", checkpoint, "--sampler", "ddim", "--steps", 2,
               "--device", "cpu", "--out", tmp_path]
    code, _, err = run_cli(capsys, *command, "--n", 2)
    assert code == 0, err
    check_samples(tmp_path, 2)
    # A second set into the same folder: refused, or with --overwrite the first set is replaced, never mixed.
    code, _, err = run_cli(capsys, *command, "--n", 1, "--seed", 1)
    assert code == 2 and err.startswith(f"error: samples folder {tmp_path} is not empty") and "--overwrite" in err
    code, _, err = run_cli(capsys, *command, "--n", 1, "--seed", 1, "--overwrite")
    assert code == 0, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["_COMPLETE.json", "grid.png", "sample_000001.png",
                                                               "samples.json", "samples.npy"]
    assert np.load(tmp_path / "samples.npy").shape == (1, 1, 256, 256)


def test_sample_checks_every_stage_steps_before_sampling_and_names_the_stage(smoke_run, capsys, tmp_path,
                                                                               monkeypatch):
    """`--steps` above a stage's T failed only after the stages before it had sampled, without naming it."""
    from mrnet_utils import pipeline

    runs = [smoke_run(stage).folder for stage in ("base64", "sr1", "sr2")]
    capsys.readouterr()  # training the smoke runs, when this test is the first to need them, printed progress
    monkeypatch.setattr(pipeline, "sample_stage", lambda *args, **kwargs: pytest.fail("sampled before checking"))
    code, _, err = run_cli(capsys, "sample", "--pipeline", "cascade", "--checkpoints", *runs, "--sampler", "resshift",
                           "--steps", 5, "--device", "cpu", "--out", tmp_path / "samples")
    assert code == 2 and err == ("error: stage sr1 (resshift): steps=5 must be between 1 and the schedule's T=4 "
                                 "(option --steps)\n")
    assert not (tmp_path / "samples").exists()


def test_each_stage_samples_with_its_default_unless_a_sampler_is_named(smoke_run, capsys, tmp_path):
    """Without --sampler, single256 samples as --sampler/--steps set to its default would (the smoke preset's)."""
    checkpoint = smoke_run("single256", use_swin=False).folder / FINAL_CHECKPOINT
    sampler, steps = default_sampler(stage_config("single256", "smoke"))
    common = ["sample", "--pipeline", "single256", "--checkpoints", checkpoint, "--n", 2, "--device", "cpu"]
    runs = {"default": [], "explicit": ["--sampler", sampler, "--steps", steps], "other": ["--sampler", "ddim",
                                                                                          "--steps", 5]}
    images = {}
    for name, extra in runs.items():
        code, _, err = run_cli(capsys, *common, *extra, "--out", tmp_path / name)
        assert code == 0, err
        images[name] = np.load(tmp_path / name / "samples.npy")
    assert np.array_equal(images["default"], images["explicit"])
    assert not np.allclose(images["default"], images["other"], atol=1e-3)


def test_study_runs_and_presets_list_what_run_all_sh_reads(capsys):
    code, out, _ = run_cli(capsys, "study-runs")
    assert code == 0
    runs = [line.split() for line in out.splitlines()]
    assert runs[0] == ["base64", "True", "None", "base64_swin", "None"]  # stage, use_swin, process, run name, teacher
    assert ["single256", "True", "None", "single256_swin", "None"] in runs
    assert not any(run[:2] == ["single256", "False"] for run in runs)
    # the distilled base learns from the Swin base run, trained before it
    assert runs.index(["base64", "True", "distilled", "base64_swin_distilled", "base64_swin"]) > runs.index(runs[0])
    assert len(runs) == 10  # base64, sr1, sr2 with and without Swin; single256; the distilled base; two SR baselines
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and out.split() == ["smoke", "demo", "gpu", "full", "reference"]


def test_train_takes_the_baseline_process_and_steps_also_for_a_preset_that_counts_epochs(capsys, monkeypatch, tmp_path):
    """What torchrun runs for run_all.sh --gpus: the study's runs, baselines included, through `train`."""
    from mrnet_utils.training import checkpoint, loop

    trained = []

    def fake_train(cfg, data, out, resume, compile, grids, device):
        trained.append((cfg, resume, device))
        return loop.TrainResult(out / "final.pt", cfg.train.steps, cfg.train.steps, 1.0, 2.0, 0)

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda path: {})  # the final checkpoint train() names
    base = ["train", "--data", "x.npz", "--out", str(tmp_path), "--resume"]
    assert run_cli(capsys, *base, "--stage", "sr1", "--preset", "gpu", "--process", "regression")[0] == 0
    cfg, resume, device = trained[-1]
    assert (cfg.name, cfg.diffusion.process, cfg.train.epochs, resume) == ("sr1_swin_regression", "regression", 5, True)
    assert (cfg.train.seed, device) == (stage_config("sr1", "gpu").train.seed, None)  # the preset's; train() picks
    assert run_cli(capsys, *base, "--stage", "base64", "--preset", "gpu", "--steps", "7")[0] == 0
    cfg, _, _ = trained[-1]
    assert (cfg.train.steps, cfg.train.epochs) == (7, 0)  # the steps asked for, not the preset's epochs
    assert run_cli(capsys, *base, "--stage", "base64", "--preset", "gpu", "--seed", "7", "--device", "cpu")[0] == 0
    cfg, _, device = trained[-1]
    assert (cfg.train.seed, device) == (7, "cpu")


def test_version_prints_the_installed_packages_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"mrnet_utils {metadata.version('mrnet_utils')}\n"


# Each case: the arguments, and a piece of the message that names the parameter at fault.
# `{run}` stands for a smoke base64 run folder, `{tmp}` for an empty temporary folder.
BAD_ARGUMENTS = {
    "no command": ([], "required: command"),
    "unknown stage": (["train", "--stage", "base128", "--data", "x.npz", "--out", "{tmp}"], "argument --stage"),
    "unknown preset": (["train", "--stage", "sr1", "--preset", "tiny", "--data", "x.npz", "--out", "{tmp}"],
                       "argument --preset"),
    "zero steps": (["train", "--stage", "sr1", "--steps", "0", "--data", "x.npz", "--out", "{tmp}"],
                   "argument --steps: must be a positive integer"),
    "missing --data": (["train", "--stage", "sr1", "--out", "{tmp}"], "required: --data"),
    "missing data file": (["train", "--stage", "base64", "--preset", "smoke", "--data", "{tmp}/none.npz",
                           "--out", "{tmp}/run"], "none.npz does not exist"),
    "fresh run into a used folder": (["train", "--stage", "base64", "--preset", "smoke", "--data", "x.npz",
                                     "--out", "{run}"], "with resume=True, or choose a new out_dir to start afresh "
                                                        "(option --resume)"),
    "steps without sampler": (["sample", "--pipeline", "single256", "--checkpoints", "{run}", "--steps", "5",
                               "--out", "{tmp}"], "--sampler and --steps go together"),
    "sampler without steps": (["sample", "--pipeline", "single256", "--checkpoints", "{run}", "--sampler", "ddim",
                               "--out", "{tmp}"], "--sampler and --steps go together"),
    "unknown sampler": (["sample", "--pipeline", "single256", "--checkpoints", "{run}", "--sampler", "euler",
                         "--out", "{tmp}"], "argument --sampler"),
    "negative --n": (["sample", "--pipeline", "single256", "--checkpoints", "{run}", "--n", "-1", "--out", "{tmp}"],
                     "argument --n"),
    "two checkpoints for a cascade": (["sample", "--pipeline", "cascade", "--checkpoints", "{run}", "{run}",
                                       "--out", "{tmp}"], "cascade needs 3 --checkpoints: base64, sr1, sr2"),
    "two checkpoints for single256": (["sample", "--pipeline", "single256", "--checkpoints", "{run}", "{run}",
                                       "--out", "{tmp}"], "single256 needs 1 --checkpoints: single256"),
    "missing checkpoint": (["sample", "--pipeline", "single256", "--checkpoints", "{tmp}/none.pt", "--out", "{tmp}"],
                           "no checkpoint file at {tmp}/none.pt"),
    "base64 checkpoint for single256": (["sample", "--pipeline", "single256", "--checkpoints", "{run}",
                                         "--device", "cpu", "--out", "{tmp}"], "holds stage base64, but --pipeline single256 needs single256 there"),
    "cascade in the wrong order": (["sample", "--pipeline", "cascade", "--checkpoints", "{run}", "{run}", "{run}",
                                    "--device", "cpu", "--out", "{tmp}"], "holds stage base64, but --pipeline cascade needs sr1 there"),
    "unknown device": (["sample", "--pipeline", "single256", "--checkpoints", "{run}", "--device", "gpu0",
                        "--out", "{tmp}"], "argument --device"),
    "unavailable device": (["sample", "--pipeline", "single256", "--checkpoints", "{run}", "--device", "cuda:99",
                            "--out", "{tmp}"], "argument --device: cuda:99 is not available"),
    "missing notebook": (["export-html", "{tmp}/none.ipynb"], "notebook {tmp}/none.ipynb does not exist; run it first"),
    "one page for two notebooks": (["export-html", "{tmp}/a.ipynb", "{tmp}/b.ipynb", "--out", "{tmp}/page.html"],
                                   "--out names one page, but 2 notebooks were given"),
    "negative seed": (["sample", "--pipeline", "single256", "--checkpoints", "{tmp}", "--seed", "-3",
                       "--out", "{tmp}"], "argument --seed"),
    "negative training seed": (["train", "--stage", "sr1", "--seed", "-1", "--data", "x.npz", "--out", "{tmp}"],
                               "argument --seed"),
    "unavailable training device": (["train", "--stage", "sr1", "--device", "cuda:99", "--data", "x.npz",
                                     "--out", "{tmp}"], "argument --device: cuda:99 is not available"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_give_exit_code_2_and_one_line_naming_the_parameter(case, smoke_run, capsys, tmp_path):
    argv, expected = BAD_ARGUMENTS[case]
    run = smoke_run("base64").folder if any("{run}" in arg for arg in argv) else None
    capsys.readouterr()  # training the smoke run, when this case is the first to need it, printed progress
    fill = {"run": run, "tmp": tmp_path}
    code, out, err = run_cli(capsys, *(arg.format(**fill) for arg in argv))
    assert code == 2
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert expected.format(**fill) in err
    assert "Traceback" not in out + err


def test_python_m_reports_a_missing_data_file_in_one_line(tmp_path):
    """The real entry point, in a fresh interpreter: one line on stderr, no traceback, exit code 2."""
    missing = tmp_path / "missing.npz"
    done = subprocess.run(
        [sys.executable, "-m", "mrnet_utils", "train", "--stage", "sr1", "--preset", "smoke",
         "--data", str(missing), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert str(missing) in done.stderr and "Traceback" not in done.stderr
