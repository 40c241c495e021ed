"""Faults and bad inputs of issue 34: sets of files written whole, only finite numbers written, full disks,
bad files refused in one line, and the study's sizes checked before it trains.

Every test provokes one fault on CPU and checks what the program does (docs/reliability.md lists them).
The writers are killed in child processes at several points: SIGKILL (nothing runs after it), SIGTERM (a
batch scheduler's stop: `stopped: ...`, status 143) and a file-size limit (RLIMIT_FSIZE: writes fail
with EFBIG); each time the output holds the complete earlier set, or the complete new one.
"""

import errno
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrnet_utils import cli, files
from mrnet_utils.data.mrnet import iter_exams, load_volume
from mrnet_utils.data.phantom import write_phantom
from mrnet_utils.data.preprocess import preprocess
from mrnet_utils.data.samples import read_samples
from mrnet_utils.data.slices import load_cache
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks import build_network
from mrnet_utils.pipeline import check_finite_samples, write_samples
from mrnet_utils.presets import default_sampler, preset, stage_config
from mrnet_utils.provenance import file_sha256
from mrnet_utils.study.sizes import check_sizes
from mrnet_utils.training import log
from mrnet_utils.training.checkpoint import FINAL_CHECKPOINT, load_checkpoint, load_stage, save_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


def run_cli(capsys, *argv):
    """The command line in-process: (exit code, standard output, error lines); never a traceback."""
    code = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, [line for line in err.splitlines() if line.startswith(("error:", "stopped:"))]


def digests(folder: Path) -> dict[str, str]:
    """Every file under `folder` by relative path, with its SHA-256: what "the same set" means here."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def dead_pid() -> int:
    """The id of a process that has exited (to name temporary files a killed process left behind)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- writers killed at several points ----------------------------------------------------------------

# The command line in a child process; `kill` sends the child a signal when it makes the n-th call of a
# function (before the call), `limit` caps the size of any file it writes (RLIMIT_FSIZE), `no_exchange`
# makes it replace folders by two renames, as a system without renameat2 does.
CHILD = """
import importlib, json, os, resource, signal, sys
from mrnet_utils import cli, files

kill, limit, no_exchange = json.loads(sys.argv[1])
if kill:
    module_name, attribute, call, signame = kill
    module = importlib.import_module(module_name)
    original, calls = getattr(module, attribute), []

    def stopping(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            os.kill(os.getpid(), getattr(signal, signame))
        return original(*args, **kwargs)

    setattr(module, attribute, stopping)
if no_exchange:
    files._exchange = lambda first, second: False
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(cli.main(sys.argv[2:]))
"""


def run_child(argv, kill=None, limit=None, no_exchange=False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps([kill, limit, no_exchange]), *map(str, argv)],
                          cwd=REPO_ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=600)


def check_outcome(child, kill, limit, line):
    """The child died by SIGKILL, stopped on SIGTERM with one line, or refused the file over the limit in one
    line starting with `line`."""
    if kill and kill[3] == "SIGKILL":
        assert child.returncode == -signal.SIGKILL, child.stderr
    elif kill:
        assert child.returncode == 143, child.stderr
        assert child.stderr.splitlines()[-1].startswith("stopped: SIGTERM stopped") and "Traceback" not in child.stderr
    elif limit:
        assert child.returncode == 2 and "Traceback" not in child.stderr, child.stderr
        assert child.stderr.splitlines()[-1].startswith(f"error: {line}"), child.stderr


@pytest.fixture(scope="module")
def single256(smoke_run):
    return smoke_run("single256", use_swin=False).folder


@pytest.fixture(scope="module")
def old_samples(single256, tmp_path_factory):
    """A complete samples folder written by `sample` (seeds 0 and 1), and its files' digests."""
    out = tmp_path_factory.mktemp("old") / "samples"
    assert cli.main(["sample", "--pipeline", "single256", "--checkpoints", str(single256), "--n", "2",
                     "--sampler", "ddim", "--steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    return out, digests(out)


SAMPLE_KILLS = {
    "SIGKILL after one PNG": (("mrnet_utils.pipeline", "write_png", 2, "SIGKILL"), None, False),
    "SIGTERM after one PNG": (("mrnet_utils.pipeline", "write_png", 2, "SIGTERM"), None, False),
    "SIGKILL before the swap": (("mrnet_utils.files", "_publish", 1, "SIGKILL"), None, False),
    "SIGKILL between two renames": (("os", "rename", 2, "SIGKILL"), None, True),
    "file-size limit": (None, 200_000, False),  # each PNG fits, samples.npy (512 KiB) does not
}


@pytest.mark.slow
@pytest.mark.parametrize("point", SAMPLE_KILLS)
def test_sample_overwrite_killed_at_any_point_keeps_the_complete_earlier_set(old_samples, single256, tmp_path, point,
                                                                              capsys):
    """Before: a kill left a partial set of PNGs that `score` read with exit 0, and `--overwrite` deleted the
    earlier set first, so that a kill lost both."""
    kill, limit, no_exchange = SAMPLE_KILLS[point]
    out = tmp_path / "samples"
    shutil.copytree(old_samples[0], out)
    argv = ["sample", "--pipeline", "single256", "--checkpoints", single256, "--n", 2, "--seed", 5, "--sampler",
            "ddim", "--steps", 2, "--device", "cpu", "--out", out, "--overwrite"]
    child = run_child(argv, kill, limit, no_exchange)
    check_outcome(child, kill, limit, f"cannot write sample array samples.npy to {out}: File too large; the file is "
                                      "larger than this process may write (ulimit -f)")
    if point == "SIGKILL between two renames":
        # The earlier set is beside the folder; a reader says where, and the next writer puts it back.
        assert not out.exists()
        with pytest.raises(MRNetError, match=r"a writer stopped while replacing it: the earlier one is at .*\.replaced"):
            read_samples(out)
        code, _, err = run_cli(capsys, *argv[:-1])  # without --overwrite: restored, then refused as not empty
        assert code == 2 and "is not empty" in err[0]
    assert digests(out) == old_samples[1]
    assert read_samples(out).conversion == "2 PNGs, grey"
    assert not [path.name for path in tmp_path.iterdir() if path.name != "samples"
                and not (point.startswith("SIGKILL") and path.name.endswith((".partial", ".lock")))]


@pytest.mark.slow
def test_sample_overwrite_that_finishes_replaces_the_set_and_records_its_provenance(old_samples, single256, tmp_path,
                                                                                     capsys):
    out = tmp_path / "samples"
    shutil.copytree(old_samples[0], out)
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    code, stdout, err = run_cli(capsys, "sample", "--pipeline", "single256", "--checkpoints", single256, "--n", 2,
                                "--seed", 5, "--device", "cpu", "--out", out, "--overwrite")
    assert code == 0 and stdout.strip().endswith(f"wrote 2 samples to {out}"), err
    assert sorted(path.name for path in out.iterdir()) == [files.COMPLETE_FILE, "grid.png", "notes.txt",
                                                          "sample_000005.png", "sample_000006.png", "samples.json",
                                                          "samples.npy"]
    assert [path.name for path in tmp_path.iterdir()] == ["samples"]  # no temporary folder, lock or old set
    record = json.loads((out / "samples.json").read_text(encoding="utf-8"))
    checkpoint = single256 / FINAL_CHECKPOINT
    stage = record["stages"][0]
    assert (record["seeds"], record["pipeline"], record["preset"]) == ([5, 6], "single256", "smoke")
    assert (stage["stage"], stage["checkpoint"], stage["sha256"]) == ("single256", str(checkpoint),
                                                                       file_sha256(checkpoint))
    assert stage["step"] == load_checkpoint(checkpoint)["step"] and stage["config"]["unet"]["use_swin"] is False
    assert (stage["sampler"], stage["steps"]) == default_sampler(stage_config("single256", "smoke"))  # not named
    environment = record["environment"]
    assert set(environment["packages"]) == {"mrnet_utils", "torch", "diffusers", "numpy"}
    assert environment["packages"]["torch"] == torch.__version__.split("+")[0]
    assert environment["git_commit"] is None or len(environment["git_commit"]) == 40


def test_the_samples_folder_records_the_sampler_named_and_its_grid_is_not_read_as_a_sample(old_samples):
    """Before: `score --samples mine=samples/` stopped on grid.png (README's own example)."""
    out, _ = old_samples
    record = json.loads((out / "samples.json").read_text(encoding="utf-8"))
    assert (record["stages"][0]["sampler"], record["stages"][0]["steps"]) == ("ddim", 2)
    samples = read_samples(out)
    assert samples.images.shape == (2, 1, 256, 256) and samples.conversion == "2 PNGs, grey"
    assert np.abs(samples.images.numpy() - np.load(out / "samples.npy")).max() <= 1 / 255 + 1e-6


def test_a_samples_folder_without_its_marker_or_changed_since_is_refused_naming_it(old_samples, tmp_path):
    torn = shutil.copytree(old_samples[0], tmp_path / "torn")
    (torn / files.COMPLETE_FILE).unlink()
    with pytest.raises(MRNetError, match=f"^samples folder {torn} has no {files.COMPLETE_FILE}: the `sample` that "
                                         "wrote it did not finish"):
        read_samples(torn)
    changed = shutil.copytree(old_samples[0], tmp_path / "changed")
    (changed / "sample_000001.png").write_bytes(b"cut")
    with pytest.raises(MRNetError, match=r"is not as its writer left it: sample_000001.png is 3 bytes"):
        read_samples(changed)


PREPROCESS_KILLS = {
    "SIGKILL while reading exams": (("mrnet_utils.data.preprocess", "normalise", 3, "SIGKILL"), None),
    "file-size limit": (None, 500_000),  # the cache is about 1.5 MB
}


@pytest.mark.slow
@pytest.mark.parametrize("point", PREPROCESS_KILLS)
def test_preprocess_killed_at_any_point_keeps_the_earlier_cache(tiny_phantom, tiny_cache, tmp_path, point):
    kill, limit = PREPROCESS_KILLS[point]
    out = shutil.copy(tiny_cache, tmp_path / "cache.npz")
    child = run_child(["preprocess", "--mrnet-root", tiny_phantom, "--plane", "sagittal", "--central-slices", 2,
                       "--out", out], kill, limit)
    check_outcome(child, kill, limit, f"cannot write slice cache cache.npz to {tmp_path}: File too large;")
    assert Path(out).read_bytes() == Path(tiny_cache).read_bytes()
    assert load_cache(out)["metadata"]["plane"] == "coronal"


SYNTH_KILLS = {
    "SIGKILL after one exam": (("mrnet_utils.data.phantom", "write_exam", 2, "SIGKILL"), None),
    "file-size limit": (None, 100_000),  # a series is over 400 kB
}


@pytest.mark.slow
@pytest.mark.parametrize("point", SYNTH_KILLS)
def test_synth_overwrite_killed_at_any_point_keeps_the_earlier_phantom(tmp_path, point):
    kill, limit = SYNTH_KILLS[point]
    out = write_phantom(tmp_path / "MRNet", 1, 1, seed=0, progress=False, workers=1)
    before = digests(out)
    child = run_child(["synth", "--out", out, "--train-exams", 2, "--valid-exams", 1, "--seed", 1, "--overwrite"],
                      kill, limit)
    check_outcome(child, kill, limit, f"writing the phantom to {out} failed")  # numpy: "N requested and M written"
    assert digests(out) == before
    assert [exam.exam_id for exam in iter_exams(out, "train", "coronal")] == [0]


SCORE_KILLS = {
    "SIGTERM while scoring": (("mrnet_utils.study.generation", "score_samples", 1, "SIGTERM"), None),
    "SIGKILL between the two tables": (("mrnet_utils.evaluation.tables", "write_atomically", 2, "SIGKILL"), None),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", SCORE_KILLS)
def test_score_overwrite_killed_at_any_point_keeps_the_earlier_tables(old_samples, tiny_cache, tmp_path, point):
    kill, limit = SCORE_KILLS[point]
    argv = ["score", "--samples", f"mine={old_samples[0]}", "--cache", tiny_cache, "--out", tmp_path / "scored"]
    assert cli.main([str(arg) for arg in argv]) == 0
    before = digests(tmp_path / "scored")
    assert {"generation_scored.csv", "generation_scored.md", files.COMPLETE_FILE} == set(before)
    child = run_child([*argv, "--overwrite"], kill, limit)
    check_outcome(child, kill, limit, "")
    assert digests(tmp_path / "scored") == before


def test_score_refuses_a_repeated_name_and_an_unmarked_output_of_sample(old_samples, tiny_cache, tmp_path, capsys):
    """Before: `--samples a=x a=y` silently dropped the first set."""
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = run_cli(capsys, "score", "--samples", f"a={old_samples[0]}", f"a={old_samples[0]}", "--cache",
                           tiny_cache, "--out", tmp_path / "scored")
    assert code == 2 and err == ["error: --samples names a more than once; give each set of samples its own NAME"]
    code, _, err = run_cli(capsys, "score", "--samples", f"a={old_samples[0]}", "--cache", tiny_cache, "--out",
                           tmp_path)
    assert code == 2 and err[0].startswith(f"error: score folder {tmp_path} is not empty")
    assert not (tmp_path / "scored").exists()


# --- sets written whole: the library ----------------------------------------------------------------------


def test_a_result_folder_appears_complete_or_not_at_all(tmp_path):
    out = tmp_path / "a" / "b" / "set"
    with pytest.raises(RuntimeError):
        with files.result_folder(out) as folder:
            (folder / "one.txt").write_text("1", encoding="utf-8")
            raise RuntimeError("the work failed")
    assert not (tmp_path / "a").exists()  # the parents it created, its temporary folder and lock: all gone
    with files.result_folder(out, record={"made_by": "test"}) as folder:
        assert folder != out and not out.exists()
        (folder / "one.txt").write_text("1", encoding="utf-8")
        (folder / "sub").mkdir()
        (folder / "sub" / "two.txt").write_text("22", encoding="utf-8")
    assert files.check_complete(out) == {"files": {"one.txt": 1, "sub/two.txt": 2}, "record": {"made_by": "test"}}
    assert sorted(path.name for path in out.parent.iterdir()) == ["set"]
    # Refused before the block runs: the work is never done for a folder that cannot take it.
    with pytest.raises(MRNetError, match=rf"^output folder {out} is not empty \(one.txt, sub\); choose an empty "
                                         r"out_dir, or replace what it holds with overwrite=True$"):
        with files.result_folder(out):
            pytest.fail("the block ran")


@pytest.mark.parametrize("exchange", [True, False], ids=["one atomic swap", "two renames"])
def test_overwrite_replaces_only_what_the_writer_owns(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(files, "_exchange", lambda first, second: False)
    out = tmp_path / "set"
    with files.result_folder(out, owns=("*.csv",)) as folder:
        (folder / "old.csv").write_text("old", encoding="utf-8")
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with files.result_folder(out, overwrite=True, owns=("*.csv",)) as folder:
        (folder / "new.csv").write_text("new", encoding="utf-8")
    assert sorted(path.name for path in out.iterdir()) == [files.COMPLETE_FILE, "new.csv", "notes.txt"]
    assert files.check_complete(out)["files"] == {"new.csv": 3}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["set"]


def test_what_a_killed_writer_left_is_cleaned_up_or_put_back_by_the_next(tmp_path):
    out = tmp_path / "set"
    with files.result_folder(out) as folder:
        (folder / "a.txt").write_text("a", encoding="utf-8")
    pid = dead_pid()
    (tmp_path / f".set.{pid}.partial").mkdir()  # killed while writing
    out.rename(tmp_path / f".set.{pid}.replaced")  # killed between two renames
    with pytest.raises(MRNetError, match=f"the earlier one is at {tmp_path}/.set.{pid}.replaced"):
        files.check_complete(out)
    with pytest.raises(MRNetError, match="is not empty"):
        with files.result_folder(out):
            pass
    assert files.check_complete(out)["files"] == {"a.txt": 1}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["set"]


def test_two_writers_of_one_result_folder_the_second_refused_naming_the_first(tmp_path):
    with files.result_folder(tmp_path / "set"):
        with pytest.raises(MRNetError, match=rf"^{tmp_path}/set is in use by process {os.getpid()}"):
            with files.result_folder(tmp_path / "set"):
                pass


# --- only finite numbers written ---------------------------------------------------------------------------


def test_non_finite_samples_are_refused_naming_the_stage_the_seeds_and_the_causes(tmp_path):
    images = torch.zeros(4, 1, 8, 8)
    images[1, 0, 2, 2], images[3, 0, 0, 0] = float("nan"), float("inf")
    with pytest.raises(MRNetError, match=r"^stage sr2 sampled NaN or infinite values for seeds 11, 13 \(2 of 4 images\); "
                                         r"nothing was written. Likely causes: non-finite weights .*\(lower --guidance\)$"):
        check_finite_samples(images, "sr2", [10, 11, 12, 13])
    check_finite_samples(images[[0, 2]], "sr2", [10, 12])  # finite: nothing to say
    with pytest.raises(MRNetError, match=r"^the samples hold NaN or infinite values for seeds 11, 13"):
        write_samples(images, tmp_path / "samples", [10, 11, 12, 13])
    assert list(tmp_path.iterdir()) == []


def test_a_stage_with_non_finite_weights_stops_the_cascade_at_that_stage(capsys):
    """Before: NaN weights (with a valid digest) sampled black images with exit 0. The check sits in the pipeline,
    after each stage's sampler and before the clamp that would turn inf into 1, so the next stage never runs."""
    from mrnet_utils.pipeline import TrainedStage, sample_cascade

    stages = []
    for name in ("base64", "sr1", "sr2"):
        cfg = stage_config(name, "smoke")
        torch.manual_seed(0)
        stages.append(TrainedStage(build_network(cfg.unet).eval(), cfg, 0, None))
    with torch.no_grad():
        next(stages[1].model.parameters()).fill_(float("nan"))
    with pytest.raises(MRNetError, match=r"^stage sr1 sampled NaN or infinite values for seeds 0, 1 \(2 of 2 images\)"):
        sample_cascade(stages, [0, 1], progress=False)


def test_guidance_must_be_a_finite_number(capsys, tmp_path):
    """Before: `--guidance inf` sampled NaN images and wrote `"guidance": Infinity` (not JSON) with exit 0."""
    for value in ("inf", "nan", "-inf"):
        code, _, err = run_cli(capsys, "sample", "--pipeline", "single256", "--checkpoints", tmp_path / "none.pt",
                               f"--guidance={value}", "--out", tmp_path / "samples")
        assert code == 2 and err == [f"error: mrnet_utils sample: argument --guidance: must be a finite number, not "
                                     f"{value} (see --help)"]


def test_json_outputs_are_strict(tmp_path):
    with pytest.raises(MRNetError, match=rf"^cannot write record {tmp_path}/r.json: stages\[1\].guidance \(inf\) is not a finite "
                                         r"number, which JSON cannot hold; nothing was written$"):
        files.write_json(tmp_path / "r.json", {"stages": [{"guidance": 1.0}, {"guidance": float("inf")}]})
    assert list(tmp_path.iterdir()) == []
    files.write_json(tmp_path / "r.json", {"guidance": 3.0})
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8")) == {"guidance": 3.0}


def smoke_payload(step=1):
    cfg = stage_config("base64", "smoke")
    torch.manual_seed(0)
    model = build_network(cfg.unet)
    return {"format_version": 1, "config": cfg.to_dict(), "step": step, "model": model.state_dict(), "ema": None}


def test_a_checkpoint_with_non_finite_weights_is_refused_unless_asked(tmp_path, capsys):
    """Before: a checkpoint whose weights held NaN (with a valid digest) sampled all-NaN images, exit 0."""
    payload = smoke_payload()
    name = next(key for key, value in payload["model"].items() if value.is_floating_point())
    payload["model"][name][0] = float("nan")
    path = save_checkpoint(tmp_path, payload, name=FINAL_CHECKPOINT)
    message = f"checkpoint {path}: model.{name} holds NaN or infinite values, so it cannot sample or train"
    with pytest.raises(MRNetError, match=f"^{message}"):
        load_checkpoint(path)
    assert torch.isnan(load_checkpoint(path, check_finite=False)["model"][name]).any()
    code, _, err = run_cli(capsys, "sample", "--pipeline", "single256", "--checkpoints", tmp_path, "--device", "cpu",
                           "--out", tmp_path / "samples")
    assert code == 2 and err[0].startswith(f"error: {message}") and not (tmp_path / "samples").exists()


# --- full disk everywhere ------------------------------------------------------------------------------------


def test_a_full_disk_while_taking_a_lock_is_one_line_and_leaves_no_lock_or_folder(tmp_path, monkeypatch, capsys,
                                                                                  tiny_cache):
    """Before: `os.pwrite` ENOSPC in the lock gave a traceback from `train` and `sample`, leaving the lock file
    and the folder behind."""
    def full(*args):
        raise DISK_FULL

    monkeypatch.setattr(files.os, "pwrite", full)
    code, _, err = run_cli(capsys, "train", "--stage", "base64", "--preset", "smoke", "--data", tiny_cache,
                           "--out", tmp_path / "run")
    assert code == 2 and err == [f"error: cannot write lock file {files.LOCK_FILE} to {tmp_path / 'run'}: No space "
                                 "left on device; free disk space there or write to a disk with room (files already "
                                 "there are untouched) (option --out)"]
    code, _, err = run_cli(capsys, "sample", "--pipeline", "single256", "--checkpoints", tmp_path / "none.pt",
                           "--out", tmp_path / "new" / "samples")
    assert code == 2 and err[0].startswith(f"error: cannot write lock file .samples.lock to {tmp_path / 'new'}: No "
                                           "space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_logging_is_one_line_and_leaves_the_log_as_it_was(tmp_path, monkeypatch):
    """Before: ENOSPC on the first log row gave a traceback and left an empty train_log.csv."""
    path = tmp_path / log.LOG_FILE
    row = {"step": 2, "loss": 0.5, "lr": 1e-3, "images_per_s": 10.0, "elapsed_s": 1.0, "skipped": 0, "val_loss": ""}
    real_open = Path.open

    def full_on_write(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        if "a" in mode:
            handle.write = lambda text: (_ for _ in ()).throw(DISK_FULL)
        return handle

    with monkeypatch.context() as patch:
        patch.setattr(Path, "open", full_on_write)
        with pytest.raises(MRNetError, match=f"^cannot write training log {log.LOG_FILE} to {tmp_path}: No space left"):
            log.append_log(path, row)
    assert not path.exists()
    log.append_log(path, row)
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(Path, "open", full_on_write)
        with pytest.raises(MRNetError):
            log.append_log(path, {**row, "step": 4})
    assert path.read_bytes() == before


# --- bad files refused in one line ---------------------------------------------------------------------------


def npy_header_only(path: Path, shape, dtype) -> Path:
    """An .npy file whose header claims `shape` of `dtype`, followed by a few bytes: what a damaged file holds."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                      "fortran_order": False, "shape": shape})
        handle.write(bytes(64))
    return path


HUGE = 2**24  # slices or images: terabytes, more memory than any machine this runs on


def test_array_headers_claiming_huge_shapes_are_refused_before_allocating(tiny_phantom, tiny_cache, tmp_path):
    """Before: a volume, a slice cache or a samples array claiming a huge shape raised a MemoryError traceback."""
    volume = npy_header_only(tmp_path / "0000.npy", (HUGE, 256, 256), np.uint8)
    with pytest.raises(MRNetError, match=r"0000.npy: array 0000 claims uint8 \(16777216, 256, 256\) \(1024.0 GiB\), "
                                         r"more than the .* GiB of memory available here"):
        load_volume(volume)
    cache = tmp_path / "cache.npz"
    shutil.copy(tiny_cache, cache)
    with zipfile.ZipFile(cache, "a") as archive:  # a second, huge image array
        archive.writestr("extra.npy", npy_header_only(tmp_path / "extra.npy", (HUGE, 256, 256), np.float16).read_bytes())
    with pytest.raises(MRNetError, match=r"cache.npz: array extra claims float16 \(16777216, 256, 256\)"):
        load_cache(cache)
    samples = npy_header_only(tmp_path / "samples.npy", (HUGE, 1, 256, 256), np.float32)
    with pytest.raises(MRNetError, match=r"samples.npy: array samples claims float32 \(16777216, 1, 256, 256\)"):
        read_samples(samples)


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 256, 256), np.float32), r"holds shape \(0, 256, 256\); give \(N, H, W\) or \(N, 1, H, W\)"),
    (np.array(["a", "b"]), r"array samples holds <U1 values, not real numbers"),
    (np.array([{"a": 1}], dtype=object), r"array samples holds object values, not real numbers"),
    (np.zeros((2, 8, 8), np.complex64), r"array samples holds complex64 values, not real numbers"),
], ids=["empty", "string", "object", "complex"])
def test_arrays_that_are_not_real_images_are_refused(tmp_path, array, message):
    """Before: an empty or string array gave a traceback, and a complex one lost its imaginary part silently."""
    np.save(tmp_path / "samples.npy", array, allow_pickle=True)
    with pytest.raises(MRNetError, match=message):
        read_samples(tmp_path / "samples.npy")


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height grey pixels, with no image data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side, message", [
    (20_000, r"is not a readable PNG \(Image size \(400000000 pixels\) exceeds limit"),
    (5_000, r"is 5000x5000; samples larger than 4096 pixels a side are refused"),
])
def test_images_too_large_to_be_samples_are_refused_before_decoding(tmp_path, side, message):
    """Before: a 20000x20000 PNG gave a traceback (PIL's DecompressionBombError)."""
    (tmp_path / "pngs").mkdir()
    png_header_only(tmp_path / "pngs" / "sample_0.png", side, side)
    with pytest.raises(MRNetError, match=message):
        read_samples(tmp_path / "pngs")


def test_16_bit_pngs_are_read_at_full_depth(tmp_path):
    """Before: 16-bit PNGs were clipped to 8 bits, so full-range noise read as 99.6% white."""
    values = np.random.default_rng(0).integers(0, 65536, (2, 256, 256), dtype=np.uint16)
    (tmp_path / "pngs").mkdir()
    for index, image in enumerate(values):
        Image.fromarray(image).save(tmp_path / "pngs" / f"sample_{index}.png")
    assert Image.open(tmp_path / "pngs" / "sample_0.png").mode.startswith("I")
    samples = read_samples(tmp_path / "pngs")
    assert samples.conversion == "2 PNGs, grey, 16-bit read at full depth"
    expected = torch.from_numpy(values.astype(np.float32) / 65535 * 2 - 1)[:, None]
    torch.testing.assert_close(samples.images, expected, atol=1e-6, rtol=0)


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused_naming_the_tensor(tmp_path):
    """Before: a checkpoint with a valid digest and weights of other shapes raised load_state_dict's traceback."""
    payload = smoke_payload()
    names = list(payload["model"])
    payload["model"][names[1]] = torch.zeros(3)
    path = save_checkpoint(tmp_path / "shape", payload, name=FINAL_CHECKPOINT)
    with pytest.raises(MRNetError, match=rf"^checkpoint {path} holds {names[1]} as \(3,\), where its config's "
                                         r"network has \([0-9, ]+\): its weights do not fit its own config"):
        load_stage(path)
    payload = smoke_payload()
    del payload["model"][names[0]]
    path = save_checkpoint(tmp_path / "missing", payload, name=FINAL_CHECKPOINT)
    with pytest.raises(MRNetError, match=rf"^checkpoint {path} lacks {names[0]} "):
        load_stage(path)
    payload = smoke_payload()
    payload["model"]["extra.weight"] = torch.zeros(1)
    path = save_checkpoint(tmp_path / "extra", payload, name=FINAL_CHECKPOINT)
    with pytest.raises(MRNetError, match=rf"^checkpoint {path} holds extra.weight, which its config's network does not"):
        load_stage(path)


def test_a_checkpoint_with_a_compressed_entry_is_refused(tmp_path):
    """Before: a compressed entry was inflated without a bound. torch.save stores every entry uncompressed."""
    path = save_checkpoint(tmp_path, smoke_payload(), name=FINAL_CHECKPOINT)
    with zipfile.ZipFile(path) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    squeezed = tmp_path / "squeezed.pt"
    with zipfile.ZipFile(squeezed, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    with pytest.raises(MRNetError, match=rf"^checkpoint {squeezed}: entry .* is stored compressed, which torch.save "
                                         "never does"):
        load_checkpoint(squeezed)


@contextmanager
def no_hang(seconds=60):
    """Fail instead of hanging (a FIFO opened for reading blocks until someone writes)."""
    def hung(signum, frame):
        raise AssertionError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_fifos_in_a_data_folder_are_refused_without_hanging(tiny_phantom, tmp_path, capsys):
    """Before: a FIFO named like a volume made the reader wait for ever."""
    root = shutil.copytree(tiny_phantom, tmp_path / "MRNet")
    volume = root / "train" / "coronal" / "0001.npy"
    volume.unlink()
    os.mkfifo(volume)
    with no_hang():
        code, _, err = run_cli(capsys, "preprocess", "--mrnet-root", root, "--out", tmp_path / "cache.npz")
    assert code == 2 and err == [f"error: {volume} is not a regular file (a folder, FIFO or device); move it out of "
                                 f"{volume.parent}"]
    labels = root / "valid-acl.csv"
    labels.unlink()
    os.mkfifo(labels)
    with no_hang(), pytest.raises(MRNetError, match=f"^{labels} is not a regular file"):
        list(iter_exams(root, "valid", "axial"))
    (tmp_path / "pngs").mkdir()
    os.mkfifo(tmp_path / "pngs" / "sample_0.png")
    with no_hang(), pytest.raises(MRNetError, match="sample_0.png is not a regular file"):
        read_samples(tmp_path / "pngs")


# `preprocess` in a process of its own, writing its cache slowly (a large cache on a slow disk).
SLOW_PREPROCESS = """
import sys, time
import numpy as np
from mrnet_utils import cli

def slow_savez(handle, **arrays):
    time.sleep(120)

np.savez = slow_savez
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_second_preprocess_into_the_same_cache_is_refused_while_the_first_runs(tiny_phantom, tmp_path, capsys):
    """Before: two preprocess runs with different planes into one --out both reported success; the file held one."""
    out = tmp_path / "cache.npz"
    child = subprocess.Popen([sys.executable, "-c", SLOW_PREPROCESS, "preprocess", "--mrnet-root", str(tiny_phantom),
                              "--plane", "coronal", "--out", str(out)], cwd=REPO_ROOT,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / ".cache.npz.lock"
        with no_hang(120):
            while not (lock.exists() and lock.read_text(encoding="utf-8")):
                assert child.poll() is None, child.stderr.read()
                time.sleep(0.05)
        code, _, err = run_cli(capsys, "preprocess", "--mrnet-root", tiny_phantom, "--plane", "sagittal", "--out", out)
        assert code == 2 and err[0].startswith(f"error: {out} is in use by process {child.pid}")
    finally:
        child.kill()
        child.wait()
    assert not out.exists()


def test_export_html_of_a_file_that_is_not_a_notebook_is_one_line(tmp_path, capsys):
    """Before: two tracebacks."""
    text = tmp_path / "notes.ipynb"
    text.write_text("not a notebook", encoding="utf-8")
    code, _, err = run_cli(capsys, "export-html", text)
    assert code == 2 and err == [f"error: {text} is not a Jupyter notebook (NotJSONError: Notebook does not appear "
                                 "to be JSON: 'not a notebook'); give an executed .ipynb file"]


# --- the study checks its sizes first ------------------------------------------------------------------------


def test_the_study_sizes_are_checked_on_the_cache_naming_the_option_that_fixes_them(tiny_cache, capsys):
    """Before: 4 valid exams with 6 set aside for tuning stopped the study at 02_pipeline, after every model
    had trained."""
    study = preset("demo").study
    sizes, notes = check_sizes(tiny_cache, study)
    assert (sizes.train_exams, sizes.valid_exams, sizes.tuning_exams, sizes.reported_exams) == (4, 2, 0, 2)
    assert (sizes.train_slices, sizes.reported_slices, sizes.samples) == (8, 4, study.samples)
    assert notes[0] == ("2 reported exams: the exam-bootstrap intervals need 5, so the tables give none (more exams "
                        "give them)")
    assert "FID needs at least 2048 samples and real slices, 4 here: not computed" in notes
    with pytest.raises(MRNetError, match=rf"^the study sets aside 6 valid exams for tuning, but {tiny_cache} has 2 "
                                         r"valid exams: none would be left to report on; run with --tuning-exams 0$"):
        check_sizes(tiny_cache, study, tuning_exams=6)
    code, out, err = run_cli(capsys, "check-study", "--cache", tiny_cache, "--preset", "demo", "--tuning-exams", 6)
    assert code == 2 and len(err) == 1 and "run with --tuning-exams 0" in err[0]
    code, out, err = run_cli(capsys, "check-study", "--cache", tiny_cache, "--preset", "demo", "--tuning-exams", 1)
    assert code == 0 and out.startswith(f"study sizes on {tiny_cache}: 4 train exams (8 slices), 2 valid exams: 1 for "
                                        "tuning, 1 reported (2 slices)")


def test_run_all_checks_the_sizes_after_preprocessing_and_before_the_first_training():
    script = (REPO_ROOT / "run_all.sh").read_text(encoding="utf-8")
    check = script.index("python -m mrnet_utils check-study")
    assert script.index("notebooks/00_preprocess.ipynb 00_preprocess") < check
    assert check < script.index("notebooks/01_train_stage.ipynb") and check < script.index("train_on_gpus \"$stage\"")
