"""Reliability end to end: exact resume after SIGKILL, SIGTERM and SIGINT, one writer per run folder,
non-finite losses, checkpoint fallback, mismatched checkpoints and caches, bad input through the
command line, disk full while drawing, determinism and split hygiene.

The unit-level checks (atomic saves, corrupt files, crafted pickles, the reader's and
preprocessing's refusals) live in test_checkpoint.py, test_mrnet_reader.py,
test_preprocess.py, test_data.py and test_networks.py; docs/reliability.md maps each
fault to its test.
"""

import csv
import dataclasses
import errno
import functools
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrnet_utils import cli, files, interrupts
from mrnet_utils.diffusion.processes import DDPM
from mrnet_utils.presets import stage_config, default_sampler
from mrnet_utils.data.mrnet import list_exam_ids
from mrnet_utils.data.phantom import write_phantom
from mrnet_utils.data.preprocess import preprocess
from mrnet_utils.data.slices import SliceDataset
from mrnet_utils.errors import MRNetError
from mrnet_utils.pipeline import sample_stage
from mrnet_utils.training import checkpoint
from mrnet_utils.training import loop as training
from mrnet_utils.training.checkpoint import load_checkpoint, load_stage
from mrnet_utils.training.loop import train

REPO_ROOT = Path(__file__).resolve().parents[1]

# A checkpoint after every step, so that any step can be resumed from.
BASE = stage_config("base64", "smoke").replace(train=dict(steps=4, batch_size=2, checkpoint_every=1))
# An SR stage with conditioning augmentation, EMA, dropout (so the stored torch RNG state matters)
# and a warm-up still running when the run is killed (so the LR schedule must continue).
SR = stage_config("sr1", "smoke").replace(
    unet=dict(dropout=0.1), train=dict(steps=10, batch_size=2, checkpoint_every=2, warmup_steps=6)
)


@pytest.fixture(scope="module", autouse=True)
def cpu_only():
    """These are CPU checks: bitwise equality is not promised across GPU kernels (docs/reliability.md)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        yield


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("rel") / "MRNet", 4, 2, seed=0, progress=False, workers=1)


@pytest.fixture(scope="module")
def cache(phantom, tmp_path_factory):
    return preprocess(phantom, "coronal", tmp_path_factory.mktemp("cache") / "coronal.npz", central_slices=2,
                      progress=False)


@pytest.fixture(scope="module")
def base_run(cache, tmp_path_factory):
    """An uninterrupted base64 run: the reference for determinism, non-finite stops and fallback."""
    out = tmp_path_factory.mktemp("base_reference")
    train(BASE, cache, out, progress=False)
    return out


@pytest.fixture(scope="module")
def sr_run(cache, tmp_path_factory):
    """An uninterrupted SR1 run: the reference for the SIGKILL resume."""
    out = tmp_path_factory.mktemp("sr_reference")
    train(SR, cache, out, progress=False)
    return out


def assert_bitwise_equal(actual, expected, where="payload"):
    """Same structure, same plain values, tensors equal bit for bit (dtype included)."""
    assert type(actual) is type(expected), where
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_bitwise_equal(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_bitwise_equal(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, where


def assert_same_training_state(run, reference):
    """Final weights, EMA, optimiser, LR scheduler, step and RNG of two runs agree bit for bit."""
    actual, expected = load_checkpoint(run / "final.pt"), load_checkpoint(reference / "final.pt")
    for key in ("step", "config", "model", "ema", "optimizer", "lr_scheduler", "rng"):
        assert_bitwise_equal(actual[key], expected[key], key)


def log_rows(run):
    """The train log without its timing columns, which differ between runs."""
    with (run / training.LOG_FILE).open(encoding="utf-8") as handle:
        return [(row["step"], row["loss"], row["lr"], row["skipped"]) for row in csv.DictReader(handle)]


def digests(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def run_files(folder):
    """A run folder's file names, less TensorBoard's event files (training.log.EventLog), sorted."""
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("events.out.tfevents."))


def poison_losses(monkeypatch, steps):
    """Make the training loss NaN at the given (0-based) steps of a run that starts at step 0."""
    calls = itertools.count()
    real_loss = DDPM.loss  # the loss of the stage's process

    def loss(*args, **kwargs):
        value = real_loss(*args, **kwargs)
        return value * float("nan") if next(calls) in steps else value

    monkeypatch.setattr(DDPM, "loss", loss)


# --- exact resume ---------------------------------------------------------------------------------

# The killed or stopped run: the command line's `train` in a child process, with this file's SR
# config in place of the preset's (the only change), and the same thread count as this process.
TRAIN_CHILD = """
import json, sys, torch
from mrnet_utils import cli
from mrnet_utils.config import StageConfig
cfg = StageConfig.from_dict(json.loads(sys.argv[1]))
cli.stage_config = lambda stage, preset, use_swin=True, process=None: cfg
torch.set_num_threads(int(sys.argv[2]))
sys.exit(cli.main(sys.argv[3:]))
"""


def start_training_child(cfg, cache, run, stderr):
    """`python -m mrnet_utils train --stage sr1 --data CACHE --out RUN` on `cfg`, in a process of its own."""
    arguments = [json.dumps(cfg.to_dict()), str(torch.get_num_threads()),
                 "train", "--stage", cfg.stage, "--data", str(cache), "--out", str(run)]
    return subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, *arguments], cwd=REPO_ROOT,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)},
                            stdout=subprocess.DEVNULL, stderr=stderr)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_killed_or_stopped_training_resumes_bitwise_equal_to_an_uninterrupted_run(cache, sr_run, tmp_path, capsys,
                                                                                  signum):
    """SIGKILL ends the child wherever it is; SIGTERM (a scheduler's stop) and SIGINT (Ctrl-C) end it at the end
    of the current step, with that step saved and one line saying how to continue. Either way, `resume` ends
    exactly where the uninterrupted run ends."""
    run = tmp_path / "stopped"
    with (tmp_path / "child.err").open("w", encoding="utf-8") as stderr:
        child = start_training_child(SR, cache, run, stderr)
        try:
            deadline = time.monotonic() + 120
            while not (run / "step_00000002.pt").exists():
                assert child.poll() is None, f"the training child stopped: {(tmp_path / 'child.err').read_text(encoding='utf-8')}"
                assert time.monotonic() < deadline, "no step checkpoint within 120 s"
                time.sleep(0.01)
            # A second writer (a resubmitted job, a second --resume) is refused, naming the one at work.
            code, err = run_cli(capsys, "train", "--stage", "sr1", "--preset", "smoke", "--data", cache, "--out", run,
                                "--resume")
            assert code == 2 and err == [
                f"error: {run} is in use by process {child.pid} on {socket.gethostname()} (it holds "
                f"{run / files.LOCK_FILE}); wait for it to finish or stop it, or choose another out_dir (option --out)"
            ]
            # A random moment in the 8 steps left: mid-step, mid-save or between the two.
            time.sleep(random.Random(4).uniform(0.0, 0.6))
            child.send_signal(signum)
            child.wait(timeout=120)
        finally:
            child.kill()
            child.wait()
    assert not (run / "final.pt").exists(), "the child finished before the signal; the test proved nothing"
    kept = sorted(run.glob("step_*.pt"))
    assert kept and all(load_checkpoint(path)["step"] == int(path.stem[5:]) for path in kept)
    err = (tmp_path / "child.err").read_text(encoding="utf-8")
    if signum == signal.SIGKILL:
        assert child.returncode == -signal.SIGKILL
    else:
        # The conventional status (143, 130), and one line naming the checkpoint of the step it stopped at.
        assert child.returncode == 128 + signum and "Traceback" not in err, err
        stopped_at = int(kept[-1].stem[5:])
        assert err.splitlines()[-1].split("\r")[-1] == (
            f"stopped: {signum.name} stopped training sr1_swin at step {stopped_at} of 10, saved as {kept[-1]}; "
            "continue it with resume=True (option --resume)"
        )
        assert max(int(step) for step, *_ in log_rows(run)) <= stopped_at
    # A stopped run released its folder and removed the lock file; a killed one left the file, and the
    # operating system released the lock with the process: the resume below takes it.
    assert (run / files.LOCK_FILE).exists() == (signum == signal.SIGKILL)

    train(SR, cache, run, resume=True, progress=False)
    resumed_at = int(capsys.readouterr().out.split(" at step ")[1].split()[0])
    assert 2 <= resumed_at < SR.train.steps
    if signum != signal.SIGKILL:
        assert resumed_at == stopped_at  # from the checkpoint the stop wrote
    # Weights, EMA (with its update count), AdamW moments and step counts, the LR scheduler
    # (warm-up included) and the torch RNG (dropout) all continue exactly: bit for bit, not within a tolerance.
    assert_same_training_state(run, sr_run)
    # The log, truncated to the checkpoint and continued, reads as if the run had never stopped.
    assert log_rows(run) == log_rows(sr_run)
    assert not list(run.glob(".*.partial")), "a save killed midway left its temporary file"


def test_resume_falls_back_to_the_previous_checkpoint_when_the_newest_is_corrupt(cache, base_run, tmp_path, capsys):
    run = shutil.copytree(base_run, tmp_path / "run", ignore=shutil.ignore_patterns("final.pt", "samples_*"))
    newest = run / "step_00000003.pt"
    newest.write_bytes(newest.read_bytes()[:-200])  # a torn write, as a crash without atomic saves leaves
    with pytest.warns(UserWarning, match=r"skipping checkpoint .*step_00000003\.pt: .* truncated or corrupt"):
        train(BASE, cache, run, resume=True, progress=False)
    assert f"from {run / 'step_00000002.pt'} at step 2" in capsys.readouterr().out
    assert_same_training_state(run, base_run)
    assert load_checkpoint(newest)["step"] == 3  # rewritten whole by the resumed run


# --- non-finite loss ------------------------------------------------------------------------------


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(cache, base_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    written = {}
    real_save = checkpoint.save_checkpoint

    def save_and_record(*args, **kwargs):
        path = real_save(*args, **kwargs)
        written[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        return path

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_and_record)
    poison_losses(monkeypatch, {2})
    last_good = run / "step_00000002.pt"
    with pytest.raises(MRNetError, match=rf"non-finite loss at step 2 of base64_swin; the last good checkpoint is "
                                         rf"{last_good} and is left intact"):
        train(BASE, cache, run, progress=False)
    # Nothing was written after the bad step; the last checkpoint is byte for byte as saved, and loads.
    assert run_files(run) == ["step_00000001.pt", "step_00000002.pt", training.LOG_FILE]
    assert digests(run)["step_00000002.pt"] == written["step_00000002.pt"]
    assert load_checkpoint(last_good)["step"] == 2
    # Resumed from it into the same bad step, the stop names the checkpoint the run resumed from.
    poison_losses(monkeypatch, {0})
    with pytest.raises(MRNetError, match=rf"non-finite loss at step 2 of base64_swin; the last good checkpoint is "
                                         rf"{last_good} and is left intact"):
        train(BASE, cache, run, resume=True, progress=False)
    # Resumed from it (the cause removed), the run ends exactly where an undisturbed one does.
    monkeypatch.undo()
    train(BASE, cache, run, resume=True, progress=False)
    assert_same_training_state(run, base_run)


def test_nonfinite_loss_can_skip_the_batch_and_counts_the_skips(cache, tmp_path, monkeypatch):
    run = tmp_path / "run"
    poison_losses(monkeypatch, {0, 3})
    result = train(BASE.replace(train=dict(on_nonfinite="skip")), cache, run, progress=False)
    assert result.skipped_batches == 2
    # A skipped step still counts: its log row (loss nan) and its checkpoint are written as scheduled.
    assert [(row[0], row[1], row[3]) for row in log_rows(run)][1] == ("4", "nan", "2")
    assert [row[3] for row in log_rows(run)] == ["1", "2"]
    assert load_checkpoint(run / "step_00000001.pt")["optimizer"]["state"] == {}  # step 0 was skipped
    final = load_checkpoint(result.checkpoint)
    assert final["log"]["skipped"] == 2
    # The skipped batches reached neither the weights nor the optimiser nor the LR schedule.
    assert all(state["step"].item() == 2 for state in final["optimizer"]["state"].values())
    assert final["lr_scheduler"]["last_epoch"] == 2
    assert final["ema"]["n_averaged"].item() == 2
    assert all(torch.isfinite(tensor).all() for tensor in final["model"].values())


# --- determinism and split hygiene ----------------------------------------------------------------


def test_same_seed_and_config_give_bitwise_identical_weights_and_samples(cache, base_run, tmp_path):
    run = tmp_path / "again"
    train(BASE, cache, run, progress=False)
    assert_same_training_state(run, base_run)
    assert (run / "samples_final.png").read_bytes() == (base_run / "samples_final.png").read_bytes()
    # The grid above used DPM-Solver++; DDPM also draws fresh noise at every step, from per-seed generators.
    first, second = load_stage(base_run), load_stage(run)
    images = [sample_stage(stage.model, stage.config, [0, 1], sampler=("ddpm", 3), progress=False)
              for stage in (first, second)]
    assert torch.equal(*images)
    assert not torch.equal(images[0][0], images[0][1])  # different seeds, different images


def test_no_valid_exam_reaches_training(phantom, cache, tmp_path, monkeypatch):
    train_ids, valid_ids = (set(list_exam_ids(phantom, split, "coronal")) for split in ("train", "valid"))
    assert train_ids and valid_ids and not train_ids & valid_ids
    dataset = SliceDataset(cache, "train", 64)
    assert set(dataset.exam_ids.tolist()) == train_ids
    # The training loop reads the train split and nothing else.
    loaded = []

    class RecordingDataset(SliceDataset):
        def __init__(self, cache_path, split, resolution, degradation=None):
            loaded.append(split)
            super().__init__(cache_path, split, resolution, degradation)

    monkeypatch.setattr(training, "SliceDataset", RecordingDataset)
    train(BASE.replace(train=dict(steps=1)), cache, tmp_path / "run", progress=False)
    assert loaded == ["train"]


# --- mismatched checkpoints -----------------------------------------------------------------------


def run_cli(capsys, *argv):
    """Run the command line in-process; return (exit code, its error lines).

    A refusal must be one line, the last on stderr, with no traceback (progress bars may precede it).
    """
    code = cli.main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and (not errors or err.splitlines()[-1] == errors[-1]), err
    return code, errors


@pytest.mark.parametrize("argv, message", [
    (("--stage", "base64"), r"is sr1 \(128x128, Swin\), expected base64 \(64x64, Swin\)"),
    (("--stage", "sr1", "--no-swin"), r"is sr1 \(128x128, Swin\), expected sr1 \(128x128, no Swin\)"),
])
def test_resume_from_a_checkpoint_of_another_stage_or_variant_names_the_mismatch(cache, sr_run, tmp_path, capsys,
                                                                                 argv, message):
    run = shutil.copytree(sr_run, tmp_path / "run")
    before = digests(run)
    code, err = run_cli(capsys, "train", *argv, "--preset", "smoke", "--data", cache, "--out", run, "--resume")
    assert code == 2 and len(err) == 1
    assert re.search(rf"error: checkpoint {run / 'final.pt'} {message}", err[0])
    assert digests(run) == before


# --- bad input through the command line -----------------------------------------------------------


def _remove_plane(root):
    shutil.rmtree(root / "train" / "coronal")
    return f"folder {root / 'train' / 'coronal'} is missing"


def _malformed_labels(root):
    path = root / "train-acl.csv"
    path.write_text("0,1\n1;0\n" + "\n".join(path.read_text(encoding="utf-8").splitlines()[2:]), encoding="utf-8")
    return f"label file {path}, line 2: 1 columns, expected 2"


def _truncated_volume(root):
    path = root / "valid" / "coronal" / "0005.npy"
    path.write_bytes(path.read_bytes()[:1000])
    return f"{path} is not a readable .npy volume"


def _unicode_digit_name(root):
    path = root / "train" / "coronal" / "0000\u00b2.npy"  # '²' passes str.isdigit(); int() refuses it
    shutil.copy(root / "train" / "coronal" / "0000.npy", path)
    return f"{path} is not named like an MRNet volume (NNNN.npy, four digits)"


@pytest.mark.parametrize("break_folder", [_remove_plane, _malformed_labels, _truncated_volume, _unicode_digit_name])
def test_preprocess_refuses_a_broken_mrnet_folder_in_one_line(phantom, tmp_path, capsys, break_folder):
    root = shutil.copytree(phantom, tmp_path / "MRNet")
    expected = break_folder(root)
    out = tmp_path / "out"
    out.mkdir()
    code, err = run_cli(capsys, "preprocess", "--mrnet-root", root, "--out", out / "c.npz")
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {expected}")
    assert list(out.iterdir()) == []


def test_preprocess_refuses_bad_paths_and_empty_selections_in_one_line(phantom, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("", encoding="utf-8")
    cases = [
        (("--mrnet-root", tmp_path / "nowhere"), f"MRNet folder {tmp_path / 'nowhere'} does not exist"),
        (("--mrnet-root", phantom, "--selection", "acl"), f"no valid exam of {phantom} is positive for 'acl'"),
    ]
    for argv, expected in cases:
        code, err = run_cli(capsys, "preprocess", *argv, "--out", tmp_path / "c.npz")
        assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {expected}"), err
    code, err = run_cli(capsys, "preprocess", "--mrnet-root", phantom, "--out", blocker / "c.npz")
    assert code == 2 and err == [f"error: output folder {blocker} does not exist; create it first"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_train_refuses_bad_data_and_output_paths_in_one_line(cache, tmp_path, capsys):
    with np.load(cache) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["train_images"][3, 100, 100] = np.nan
    poisoned = tmp_path / "nan.npz"
    np.savez(poisoned, **arrays)
    blocker = tmp_path / "a_file"
    blocker.write_text("", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (poisoned, tmp_path / "run", rf"{poisoned}: train_images holds NaN or infinite values \(exam 0001, slice \d+\)"),
        (poisoned, tmp_path / "new" / "deeper" / "run", "[^ ]*nan.npz: train_images holds NaN"),
        (poisoned, empty, "[^ ]*nan.npz: train_images holds NaN"),
        (cache, blocker / "run", f"output folder {blocker / 'run'} is not writable"),
    ]
    for data, out, expected in cases:
        code, err = run_cli(capsys, "train", "--stage", "base64", "--preset", "smoke", "--data", data, "--out", out)
        assert code == 2 and len(err) == 1 and re.match(f"error: {expected}", err[0]), err
    # The run folders the refused runs created are gone again, parents included; a folder that was there stays.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "empty", "nan.npz"]
    assert list(empty.iterdir()) == []


def test_disk_full_while_training_stops_in_one_line_and_keeps_nothing_torn(cache, tmp_path, capsys, monkeypatch):
    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    run = tmp_path / "run"
    code, err = run_cli(capsys, "train", "--stage", "base64", "--preset", "smoke", "--steps", 4,
                        "--data", cache, "--out", run)
    assert code == 2 and err == [
        f"error: cannot write checkpoint step_00000003.pt to {run}: No space left on device; free disk space there "
        "or write to a disk with room (files already there are untouched)"
    ]
    assert run_files(run) == [training.LOG_FILE]  # no torn or temporary checkpoint


@pytest.mark.parametrize("changes, message", [
    (dict(swin_window=3), "swin_window=3 does not divide the 8x8 bottleneck"),
    (dict(resolution=96), "stage base64 works at 64x64, not 96"),
])
def test_train_refuses_a_network_it_cannot_build_before_writing(cache, tmp_path, changes, message):
    # dataclasses.replace skips StageConfig.replace's validation, as a hand-edited config would.
    cfg = dataclasses.replace(BASE, unet=dataclasses.replace(BASE.unet, **changes))
    with pytest.raises(MRNetError, match=message):
        train(cfg, cache, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# --- shared clusters: one writer per folder, no false success, the right data (issue #14) ---------


def test_one_writer_per_folder_and_a_failed_claim_leaves_nothing_behind(tmp_path):
    run = tmp_path / "new" / "run"
    with files.claim_folder(run):
        assert (run / files.LOCK_FILE).read_text(encoding="utf-8") == f"{os.getpid()}@{socket.gethostname()}\n"
        # flock locks belong to an open file, so a second claim fails even from the same process.
        with pytest.raises(MRNetError, match=rf"{run} is in use by process {os.getpid()} ") as refused:
            with files.claim_folder(run):
                pass
        assert refused.value.parameter == "out_dir" and run.is_dir()  # the holder's folder is not removed
    assert list(run.iterdir()) == []  # the lock file goes with the claim
    with pytest.raises(RuntimeError):
        with files.claim_folder(tmp_path / "other" / "run"):
            raise RuntimeError
    assert sorted(path.name for path in tmp_path.iterdir()) == ["new"]  # what the failed claim created is gone


def run_cli_out(capsys, *argv):
    """Like run_cli, with the standard output too."""
    code = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, [line for line in err.splitlines() if line.startswith("error:")]


def test_resume_with_fewer_steps_than_done_says_so_and_names_the_final_checkpoint(cache, base_run, tmp_path,
                                                                                  capsys):
    """It exited 0 naming a final.pt that did not exist; success now means a final checkpoint that loads."""
    run = shutil.copytree(base_run, tmp_path / "run")
    before = digests(run)
    smoke = ("train", "--stage", "base64", "--preset", "smoke", "--data", cache, "--out", run, "--resume")
    code, _, err = run_cli_out(capsys, *smoke, "--steps", 2)
    assert code == 2 and err == [
        f"error: run folder {run} has already trained 4 steps, more than steps=2: its final checkpoint is "
        f"{run / 'final.pt'}, at step 4. Resume with at least 4 steps, or train the shorter run in a new out_dir "
        "(option --steps)"
    ]
    assert digests(run) == before
    # A run stopped at step 3 of 4 has step checkpoints only.
    (run / "final.pt").unlink()
    code, _, err = run_cli_out(capsys, *smoke, "--steps", 2)
    assert code == 2 and f"its newest checkpoint is {run / 'step_00000003.pt'}; it has no final checkpoint yet" in err[0]
    # Asked to end at step 3, it writes the final checkpoint from step 3, then names it.
    code, out, err = run_cli_out(capsys, *smoke, "--steps", 3)
    assert code == 0 and out.strip().endswith(f"already has its 3 steps; final checkpoint {run / 'final.pt'}"), err
    final, step_3 = load_checkpoint(run / "final.pt"), load_checkpoint(run / "step_00000003.pt")
    assert final["step"] == 3
    assert_bitwise_equal(final["model"], step_3["model"]) and assert_bitwise_equal(final["ema"], step_3["ema"])


def test_the_command_line_reports_success_only_for_a_final_checkpoint_that_loads(base_run, tmp_path, capsys,
                                                                               monkeypatch):
    """`--steps` is exactly that many steps (the reference preset counts epochs otherwise), `--no-grids` reaches
    train(), and a train() that returned without a loadable final checkpoint is not a success."""
    calls = []

    def fake_train(cfg, data, out, resume, compile, grids, device):
        calls.append((cfg, grids))
        return training.TrainResult(checkpoint=final, steps=1, trained_steps=1, seconds=1.0, images_per_second=1.0,
                                    skipped_batches=0)

    monkeypatch.setattr(training, "train", fake_train)
    argv = ("train", "--stage", "base64", "--preset", "reference", "--steps", 1, "--no-grids", "--data",
            tmp_path / "c.npz", "--out", tmp_path / "run")
    final = base_run / "final.pt"
    code, out, err = run_cli_out(capsys, *argv)
    assert code == 0 and f"final checkpoint {final}" in out
    cfg, grids = calls[-1]
    assert (cfg.train.steps, cfg.train.epochs, grids) == (1, 0, False)
    final = tmp_path / "final.pt"  # never written
    code, out, err = run_cli_out(capsys, *argv)
    assert code == 2 and err == [f"error: no checkpoint file at {final}; check the path (savepoints/<run>/step_*.pt)"]
    assert out == ""


@pytest.fixture(scope="module")
def sagittal_cache(phantom, tmp_path_factory):
    return preprocess(phantom, "sagittal", tmp_path_factory.mktemp("sagittal") / "sagittal.npz", central_slices=2,
                      progress=False)


def test_resume_refuses_another_slice_cache_naming_both(cache, sagittal_cache, base_run, tmp_path, capsys):
    run = shutil.copytree(base_run, tmp_path / "run")
    argv = ("train", "--stage", "base64", "--preset", "smoke", "--steps", 4, "--out", run, "--resume")
    code, _, err = run_cli_out(capsys, *argv, "--data", sagittal_cache)
    assert code == 2 and len(err) == 1
    assert re.fullmatch(
        rf"error: checkpoint {run / 'final.pt'} was trained on {cache} \(plane coronal, selection all, normalisation "
        rf"series; content [0-9a-f]{{12}}\), but data_path is {sagittal_cache} \(plane sagittal, selection all, "
        r"normalisation series; content [0-9a-f]{12}\); resume with the cache the run was trained on, or start a "
        r"new run in another out_dir \(option --data\)", err[0]), err[0]
    # The same slices elsewhere (a copy on scratch, a cache written again) are the same data.
    moved = shutil.copy(cache, tmp_path / "moved.npz")
    code, out, _ = run_cli_out(capsys, *argv, "--data", moved)
    assert code == 0 and "already has its 4 steps" in out
    # A checkpoint written before the cache was recorded still loads and resumes (unchecked).
    payload = load_checkpoint(run / "final.pt")
    del payload["data"]
    checkpoint.save_checkpoint(run, payload, name="final.pt")
    code, out, _ = run_cli_out(capsys, *argv, "--data", sagittal_cache)
    assert code == 0 and "already has its 4 steps" in out


# --- the log: one row per step, whatever happened before ------------------------------------------


@pytest.mark.parametrize("resume", [True, False], ids=["resumed", "started-again"])
def test_a_restart_before_the_first_checkpoint_never_logs_a_step_twice(cache, base_run, tmp_path, monkeypatch,
                                                                       resume):
    run = tmp_path / "run"
    cfg = BASE.replace(train=dict(checkpoint_every=100, log_every=1))
    poison_losses(monkeypatch, {2})  # the run stops at step 2, before any checkpoint: rows 1 and 2 are logged
    with pytest.raises(MRNetError, match="non-finite loss at step 2"):
        train(cfg, cache, run, progress=False)
    assert [row[0] for row in log_rows(run)] == ["1", "2"] and not list(run.glob("*.pt"))
    with (run / training.LOG_FILE).open("a", encoding="utf-8") as log:
        log.write("3,0.98")  # and a row torn by a kill mid-write
    monkeypatch.undo()
    train(cfg, cache, run, resume=resume, progress=False)
    rows = log_rows(run)
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert [row for row in rows if row[0] in ("2", "4")] == log_rows(base_run)  # the rows of an unbroken run


# --- disk full while drawing, grids and their progress ----------------------------------------------


def test_disk_full_while_writing_the_sample_grid_is_one_line_and_leaves_no_torn_png(cache, tmp_path, capsys,
                                                                                   monkeypatch):
    def full(self, handle, **kwargs):
        handle.write(b"\x89PNG half a grid")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    run = tmp_path / "run"
    code, err = run_cli(capsys, "train", "--stage", "base64", "--preset", "smoke", "--steps", 1, "--data", cache,
                        "--out", run)
    assert code == 2 and err == [
        f"error: cannot write sample grid samples_final.png to {run}: No space left on device; free disk space there "
        "or write to a disk with room (files already there are untouched)"
    ]
    assert run_files(run) == ["final.pt", training.LOG_FILE]  # no PNG, no temporary
    assert load_checkpoint(run / "final.pt")["step"] == 1


def test_sample_grids_show_the_sampler_steps_and_can_be_turned_off(cache, tmp_path, capsys):
    state = training.build_state(BASE, torch.device("cpu"), channels_last=False)
    training._write_sample_grid(state, BASE, None, tmp_path / "grid.png", progress=True)
    sampler, steps = default_sampler(BASE, quick=True)  # a grid watches training: the quick sampler
    err = capsys.readouterr().err
    assert f"{sampler}: 100%" in err and f"{steps}/{steps}" in err, err
    training._write_sample_grid(state, BASE, None, tmp_path / "quiet.png", progress=False)
    assert capsys.readouterr().err == ""
    code, err = run_cli(capsys, "train", "--stage", "base64", "--preset", "smoke", "--steps", 1, "--no-grids",
                        "--data", cache, "--out", tmp_path / "run")
    assert code == 0 and not list((tmp_path / "run").glob("*.png"))


# --- the command line: help, conflicts, the output folder of `sample` --------------------------------


@pytest.mark.parametrize("command, defaults", [
    ("train", ["--preset {smoke,demo,gpu,full,reference}", "(default: demo)"]),
    ("sample", ["number of images (default: 16)", "images per forward pass (default: 8)"]),
    ("preprocess", ["(default: coronal)", "(default: 5)", "(default: series)"]),
    ("synth", ["(default: 80)", "(default: 20)"]),
])
def test_help_shows_the_defaults(capsys, command, defaults):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert done.value.code == 0
    assert all(" ".join(default.split()) in text for default in defaults), text
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("central", ["3", "5"])  # 5 is the default: argparse alone would not see it given
def test_conflicting_options_are_refused_in_one_line(phantom, tmp_path, capsys, central):
    code, err = run_cli(capsys, "preprocess", "--mrnet-root", phantom, "--out", tmp_path / "c.npz",
                        "--central-slices", central, "--all-slices")
    assert code == 2 and err == ["error: mrnet_utils preprocess: argument --all-slices: not allowed with argument "
                                 "--central-slices (see --help)"]
    assert list(tmp_path.iterdir()) == []


def test_sample_checks_its_output_folder_before_loading_or_sampling_anything(tmp_path, capsys):
    """A checkpoint that does not exist is never reached: the folder is refused first."""
    blocker = tmp_path / "a_file"
    blocker.write_text("", encoding="utf-8")
    used = tmp_path / "used"
    used.mkdir()
    (used / "sample_000000.png").write_bytes(b"an earlier sample")
    sample = ("sample", "--pipeline", "single256", "--checkpoints", tmp_path / "none.pt", "--device", "cpu", "--out")
    code, err = run_cli(capsys, *sample, blocker / "samples")
    assert code == 2 and err == [f"error: output folder {blocker / 'samples'} is not writable (Not a directory); "
                                 "choose another out_dir (option --out)"]
    code, err = run_cli(capsys, *sample, used)
    assert code == 2 and err == [f"error: samples folder {used} is not empty (sample_000000.png); choose an empty "
                                 "out_dir, or replace what it holds with overwrite=True (option --overwrite)"]
    # A folder `sample` created and left empty when it failed later is removed again.
    code, err = run_cli(capsys, *sample, tmp_path / "new")
    assert code == 2 and err == [f"error: no checkpoint file at {tmp_path / 'none.pt'}; check the path "
                                 "(savepoints/<run>/step_*.pt)"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "used"]
    assert [path.name for path in used.iterdir()] == ["sample_000000.png"]


@pytest.mark.parametrize("during", [0, 1], ids=["first step", "second step"])
def test_a_second_stop_signal_stops_training_at_once_naming_the_newest_checkpoint(cache, tmp_path, monkeypatch,
                                                                                   during):
    run = tmp_path / "run"
    calls = itertools.count()
    real_loss = DDPM.loss  # the loss of the stage's process

    def impatient(*args, **kwargs):  # Ctrl-C, and again, during a step
        if next(calls) == during:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(DDPM, "loss", impatient)
    monkeypatch.setattr(training, "StopRequest", functools.partial(interrupts.StopRequest, repeat_window=-1))
    with pytest.raises(training.TrainingStopped) as stopped:
        train(BASE, cache, run, progress=False)
    newest = run / "step_00000001.pt"
    then = (f"the newest checkpoint is {newest}: continue from it with resume=True" if during else
            "no checkpoint was written yet: start it again")
    assert str(stopped.value) == f"a second SIGINT stopped training base64_swin at once at step {during}; {then}"
    assert (stopped.value.exit_code, stopped.value.checkpoint, stopped.value.step, stopped.value.parameter) == (
        (130, newest, 1, "resume") if during else (130, None, 0, None))
    # No lock file, no temporary; a folder the run created and wrote nothing to is removed again.
    assert (sorted(path.name for path in run.iterdir()) == [newest.name]) if during else not run.exists()


# --- stop signals outside training: preprocess ---------------------------------------------------------


def test_a_repeated_stop_signal_is_one_request_and_a_later_one_stops_at_once():
    """Ctrl-C under torchrun reaches a worker twice (from the terminal, then passed on by torchrun): one request.
    A second one later means "now"."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupts.StopRequest("the test", repeat_window=0.5) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested == signal.SIGINT
        time.sleep(0.6)
        with pytest.raises(interrupts.Interrupted, match="^a second SIGTERM stopped the test at once$") as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs before this returns
        assert stopped.value.exit_code == 143
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before

# `preprocess` in a process of its own, with a cache write that takes a while (a large cache on a slow disk).
PREPROCESS_CHILD = """
import sys, time
import numpy as np
from mrnet_utils import cli

def slow_savez(handle, **arrays):
    handle.write(b"PK" + bytes(1000))
    handle.flush()
    time.sleep(120)

np.savez = slow_savez
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_preprocess_stopped_while_writing_removes_its_temporary_file(phantom, tmp_path, signum):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".c.npz.{dead.pid}.partial").write_bytes(b"PK from a run killed earlier")
    child = subprocess.Popen(
        [sys.executable, "-c", PREPROCESS_CHILD, "preprocess", "--mrnet-root", str(phantom), "--out", str(out / "c.npz"),
         "--central-slices", "2"],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        temporary = out / f".c.npz.{child.pid}.partial"
        deadline = time.monotonic() + 120
        while not temporary.exists():
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "preprocess never started writing"
            time.sleep(0.01)
        child.send_signal(signum)
        err = child.communicate(timeout=60)[1]
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 128 + signum
    assert err.splitlines()[-1].split("\r")[-1] == (
        f"stopped: {signum.name} stopped `preprocess`; files it was writing were removed, finished ones kept"
    ) and "Traceback" not in err
    assert list(out.iterdir()) == []  # its own temporary file, and the killed run's, are gone; no cache
