"""Checkpoints: round trips, atomic saves under crashes, retention, corruption and refusal of code-running pickles."""

import errno
import io
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_cache
from torch_threads import one_thread

from mrnet_utils.presets import stage_config
from mrnet_utils.errors import MRNetError
from mrnet_utils.study.training import train_stage
from mrnet_utils.training import checkpoint
from mrnet_utils.training.checkpoint import (
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    rebuild_config,
    save_checkpoint,
)
from mrnet_utils.training.loop import train

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_payload(step, config=None, seed=0):
    """A payload shaped like the training loop's, with real optimiser and scheduler state."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 2))
    model(torch.randn(2, 4)).square().sum().backward()
    optimizer.step()
    scheduler.step()
    return {
        "format_version": checkpoint.FORMAT_VERSION,
        "config": (config or stage_config("sr1", "smoke")).to_dict(),
        "step": step,
        "model": model.state_dict(),
        "ema": {"weight": torch.randn(3, 4).bfloat16(), "count": torch.tensor(step)},
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.Random(seed).getstate()},
        "log": {"loss": [0.5, 0.25], "note": "smoke", "best": None},
    }


def assert_same(actual, expected):
    assert type(actual) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and torch.equal(actual, expected)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e)
    else:
        assert actual == expected


def files_in(directory):
    return sorted(path.name for path in Path(directory).iterdir())


def test_round_trip_keeps_tensors_and_plain_data(tmp_path):
    payload = make_payload(7)
    path = save_checkpoint(tmp_path, payload)
    assert path == tmp_path / "step_00000007.pt"
    assert_same(load_checkpoint(path), payload)
    assert rebuild_config(load_checkpoint(path)) == stage_config("sr1", "smoke")


def test_save_refuses_data_that_weights_only_loading_would_refuse(tmp_path):
    payload = make_payload(1)
    payload["rng"]["numpy"] = np.zeros(3)
    with pytest.raises(MRNetError, match=r"payload\['rng'\]\['numpy'\] is a numpy.ndarray"):
        save_checkpoint(tmp_path, payload)
    with pytest.raises(MRNetError, match="lacks step"):
        save_checkpoint(tmp_path, {"format_version": 1, "config": {}})
    assert files_in(tmp_path) == []


def test_crash_mid_save_keeps_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    previous = make_payload(1)
    path = save_checkpoint(tmp_path, previous, name="final.pt")
    real_save = torch.save

    def crash_halfway(obj, file):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(tmp_path, make_payload(2, seed=1), name="final.pt")
    assert files_in(tmp_path) == ["final.pt"]
    assert_same(load_checkpoint(path), previous)


# The child saves ~8 MB checkpoints in a loop; the parent kills it while a temporary file exists.
SAVE_LOOP = """
import sys, torch
from mrnet_utils.training.checkpoint import save_checkpoint
from mrnet_utils.presets import stage_config
config = stage_config("base64", "smoke").to_dict()
for step in range(1, 10_000):
    weights = {"w": torch.full((2_000_000,), float(step))}
    payload = {"format_version": 1, "config": config, "step": step, "model": weights}
    save_checkpoint(sys.argv[1], payload, keep=3)
"""


def test_sigkill_during_saves_never_leaves_a_corrupt_final_file(tmp_path):
    rng = random.Random(0)
    child = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(tmp_path)], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 30
        # Wait for two finished checkpoints and a save in progress, then kill at a random moment within it.
        while len(list(tmp_path.glob("step_*.pt"))) < 2 or not list(tmp_path.glob(".*.partial")):
            assert child.poll() is None and time.monotonic() < deadline, "the saving process stopped early"
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.02))
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    finals = sorted(tmp_path.glob("step_*.pt"))
    # keep=3, plus one more if the kill fell between the rename and the pruning
    assert 2 <= len(finals) <= 4
    for path in finals:
        payload = load_checkpoint(path)
        assert torch.all(payload["model"]["w"] == payload["step"])
    # The next save clears whatever temporary file the killed save left behind.
    save_checkpoint(tmp_path, {"format_version": 1, "config": {}, "step": 99_999}, keep=3)
    assert not list(tmp_path.glob(".*"))


def test_keeps_only_the_newest_step_checkpoints_and_never_named_ones(tmp_path):
    save_checkpoint(tmp_path, make_payload(5), name="final.pt")
    for step in range(1, 6):
        save_checkpoint(tmp_path, make_payload(step), keep=2)
    assert files_in(tmp_path) == ["final.pt", "step_00000004.pt", "step_00000005.pt"]
    # A run resumed from an earlier step keeps what it just wrote.
    save_checkpoint(tmp_path, make_payload(3), keep=2)
    assert files_in(tmp_path) == ["final.pt", "step_00000003.pt", "step_00000005.pt"]
    with pytest.raises(MRNetError, match="keep=0"):
        save_checkpoint(tmp_path, make_payload(6), keep=0)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_file_is_reported_by_name(tmp_path, fraction):
    path = save_checkpoint(tmp_path, make_payload(1))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(MRNetError, match=r"step_00000001\.pt is truncated or corrupt"):
        load_checkpoint(path)


def test_bit_flip_in_weights_is_caught_by_the_digest(tmp_path):
    payload = make_payload(1)
    path = save_checkpoint(tmp_path, payload)
    data = bytearray(path.read_bytes())
    # The zip stores tensors uncompressed, and torch.load does not check the zip CRC.
    offset = data.find(payload["model"]["weight"].numpy().tobytes())
    assert offset > 0
    data[offset + 5] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(MRNetError, match="content digest does not match"):
        load_checkpoint(path)


def test_random_bit_flips_are_caught_or_harmless(tmp_path):
    payload = make_payload(1)
    path = save_checkpoint(tmp_path, payload)
    original = path.read_bytes()
    rng = random.Random(0)
    caught = 0
    for _ in range(60):
        data = bytearray(original)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        try:
            loaded = load_checkpoint(path)
        except MRNetError:
            caught += 1
        else:  # a flip in bytes torch never reads (zip timestamps, CRCs, padding) changes nothing
            assert_same(loaded, payload)
    assert caught >= 20


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CustomClass:
    pass


def write_with_torch(obj, path):
    torch.save(obj, path)


def write_with_pickle(obj, path):
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.mark.parametrize(
    "write, unsafe_read",
    [
        (write_with_torch, lambda path: torch.load(path, weights_only=False)),
        (write_with_pickle, lambda path: pickle.loads(path.read_bytes())),
    ],
)
def test_pickle_that_would_run_code_is_refused(tmp_path, write, unsafe_read):
    marker = tmp_path / "pwned"
    path = tmp_path / "step_00000001.pt"
    write({**make_payload(1), "model": RunsCode(marker)}, path)
    with pytest.raises(MRNetError, match=r"refused to load .*step_00000001\.pt: .*\(GLOBAL posix.system\)"):
        load_checkpoint(path)
    assert not marker.exists()
    # The file really is dangerous: unpickling it without weights_only runs the command.
    unsafe_read(path)
    assert marker.exists()


def test_newer_pickle_protocol_is_rejected_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "step_00000001.pt"
    path.write_bytes(pickle.dumps({"model": RunsCode(marker)}, protocol=4))
    with pytest.raises(MRNetError, match=r"step_00000001\.pt is truncated or corrupt, or not a checkpoint "
                                         r"\(Unsupported operand \d+\)$"):
        load_checkpoint(path)
    assert not marker.exists()


def test_custom_class_is_refused(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({**make_payload(1), "log": CustomClass()}, path)
    refusal = (r"refused to load .*custom\.pt: it holds a pickled object \(GLOBAL .*CustomClass\), not plain tensors "
               r"and data, and unpickling it could run code; use only checkpoints written by save_checkpoint \(if "
               r"this one was, the file is corrupt\)$")
    with pytest.raises(MRNetError, match=refusal):
        load_checkpoint(path)


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint", encoding="utf-8")
    with pytest.raises(MRNetError, match="notes.pt is truncated or corrupt"):
        load_checkpoint(text)
    plain = tmp_path / "plain.pt"
    torch.save({"format_version": 1, "config": {}, "step": 1}, plain)
    with pytest.raises(MRNetError, match="plain.pt is not a checkpoint written by save_checkpoint"):
        load_checkpoint(plain)
    # Well-formed and intact, but without the keys every checkpoint needs.
    keyless = tmp_path / "keyless.pt"
    content = {"format_version": 1, "model": {}}
    torch.save({**content, checkpoint.DIGEST_KEY: checkpoint._digest(content)}, keyless)
    with pytest.raises(MRNetError, match="keyless.pt lacks config, step"):
        load_checkpoint(keyless)
    with pytest.raises(MRNetError, match="no checkpoint file at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_latest_checkpoint_skips_a_corrupt_newest_one(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, make_payload(step))
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000003.pt"
    newest = tmp_path / "step_00000003.pt"
    newest.write_bytes(newest.read_bytes()[:-100])
    with pytest.warns(UserWarning, match=r"skipping checkpoint .*step_00000003\.pt"):
        assert latest_checkpoint(tmp_path) == tmp_path / "step_00000002.pt"


def disk_full_in_torch_save(obj, file):
    # What torch.save does when the disk fills: the OSError is wrapped in a RuntimeError.
    file.write(b"PK partial")
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")


def disk_full_in_fsync(descriptor):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    "target, attribute, fake", [(torch, "save", disk_full_in_torch_save), (os, "fsync", disk_full_in_fsync)]
)
def test_disk_full_reports_the_directory_and_keeps_earlier_checkpoints(tmp_path, monkeypatch, target, attribute, fake):
    earlier = make_payload(1)
    save_checkpoint(tmp_path, earlier)
    monkeypatch.setattr(target, attribute, fake)
    with pytest.raises(MRNetError, match=f"cannot write checkpoint step_00000002.pt to {tmp_path}: No space left on device; free disk space"):
        save_checkpoint(tmp_path, make_payload(2))
    monkeypatch.undo()
    assert files_in(tmp_path) == ["step_00000001.pt"]
    assert_same(load_checkpoint(tmp_path / "step_00000001.pt"), earlier)


def test_unwritable_directory_is_reported(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(MRNetError, match=f"cannot write checkpoint step_00000001.pt to {blocker}/checkpoints: .*"
                                         "make the folder writable or choose another one"):
        save_checkpoint(blocker / "checkpoints", make_payload(1))
    # Running as root, chmod cannot make a directory unwritable; fake the refusal instead.
    save_checkpoint(tmp_path, make_payload(1))
    real_open = open

    def permission_denied(path, *args, **kwargs):
        if str(path).endswith(".partial"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", permission_denied)
    with pytest.raises(MRNetError, match="Permission denied; make the folder writable or choose another one"):
        save_checkpoint(tmp_path, make_payload(2))
    assert files_in(tmp_path) == ["a_file", "step_00000001.pt"]


def test_check_compatible_names_the_mismatch():
    sr1 = make_payload(1, stage_config("sr1", "smoke"))
    with pytest.raises(MRNetError, match=r"checkpoint x.pt is sr1 \(128x128, Swin\), expected sr2 \(256x256, Swin\)"):
        check_compatible(sr1, stage_config("sr2", "smoke"), path="x.pt")
    with pytest.raises(MRNetError, match=r"sr1 \(128x128, Swin\), expected sr1 \(128x128, no Swin\)"):
        check_compatible(sr1, stage_config("sr1", "smoke", use_swin=False))
    with pytest.raises(MRNetError, match=r"different sr1_swin network.*unet.channels \(8, 16, 16\) vs \(16, 32, 64\)"):
        check_compatible(sr1, stage_config("sr1", "demo"))
    with pytest.raises(MRNetError, match="unet.cond_channels 1 vs 2"):
        check_compatible(sr1, stage_config("sr1", "smoke").replace(unet=dict(cond_channels=2)))
    # Training settings may change on resume.
    check_compatible(sr1, stage_config("sr1", "smoke").replace(train=dict(steps=50, lr=3e-4)))


# One setting of the noise process, or the conditioning switch, changed alone: (stage, config section, change).
# base64 is a DDPM stage (T, schedule and betas, prediction, data range); the smoke SR1 stage is ResShift.
PROCESS_CHANGES = [
    ("base64", "diffusion", {"prediction": "v"}),
    ("base64", "diffusion", {"schedule": "cosine"}),
    ("base64", "diffusion", {"timesteps": 200}),
    ("base64", "diffusion", {"beta_start": 1e-4}),
    ("base64", "diffusion", {"beta_end": 0.02}),
    ("base64", "diffusion", {"data_range": "unit"}),
    ("sr1", "diffusion", {"process": "ddpm", "timesteps": 100, "prediction": "epsilon"}),
    ("sr1", "diffusion", {"process": "regression", "timesteps": 1}),
    ("sr1", "diffusion", {"prediction": "x0"}),
    ("sr1", "diffusion", {"kappa": 2.0}),
    ("sr1", "diffusion", {"eta_power": 0.5}),
    ("sr1", "diffusion", {"loss": "l1"}),
    ("sr1", "conditioning", {"enabled": False}),
]


@pytest.mark.parametrize("stage, section, change", PROCESS_CHANGES,
                         ids=[f"{stage}-{next(iter(change))}" for stage, _, change in PROCESS_CHANGES])
def test_check_compatible_refuses_another_noise_process_or_conditioning_and_names_the_field(stage, section, change):
    trained = stage_config(stage, "smoke")
    expected = trained.replace(**{section: change})
    field, value = next(iter(change.items()))
    before = getattr(getattr(trained, section), field)
    with pytest.raises(MRNetError, match=re.escape(f"{section}.{field} {before} vs {value}")):
        check_compatible(make_payload(1, trained), expected, path="x.pt")


def test_check_compatible_lets_training_only_settings_change():
    trained = stage_config("sr1", "smoke")
    payload = make_payload(1, trained)
    for section, change in (("diffusion", {"min_snr_gamma": 5.0}), ("conditioning", {"max_level": 0.3}),
                            ("conditioning", {"sample_level": 0.0}), ("unet", {"dropout": 0.1}),
                            ("train", {"steps": 50, "lr": 3e-4, "batch_size": 2, "ema_decay": 0.5, "seed": 4})):
        check_compatible(payload, trained.replace(**{section: change}), resume=True)
    # Without resume (loading a finished run), the EMA and LR schedule are not the checkpoint's concern.
    check_compatible(payload, trained.replace(train={"ema_decay": 0.0, "lr_schedule": "plateau"}))


@pytest.mark.parametrize("change, message", [
    ({"ema_decay": 0.0}, "train.ema_decay 0.9 vs 0.0 (an EMA cannot be added to or dropped from a run)"),
    ({"lr_schedule": "plateau"}, "train.lr_schedule warmup vs plateau"),
])
def test_resuming_refuses_settings_whose_training_state_the_checkpoint_lacks(change, message):
    trained = stage_config("base64", "smoke")
    with pytest.raises(MRNetError, match=re.escape(f"holds the training state of other settings than the smoke "
                                                   f"config's (checkpoint vs expected: {message}); resume with")):
        check_compatible(make_payload(1, trained), trained.replace(train=change), resume=True)


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    """A smoke base64 run of 2 steps on a synthetic cache: (cache, run folder); copy the folder to change it."""
    root = tmp_path_factory.mktemp("two_step")
    cache = write_cache(root / "cache.npz", 4)
    with one_thread():
        train(stage_config("base64", "smoke").replace(train=dict(steps=2)), cache, root / "run", progress=False,
              grids=False)
    return cache, root / "run"


@pytest.mark.parametrize("section, change, field", [
    ("diffusion", {"prediction": "v"}, "diffusion.prediction epsilon vs v"),
    ("diffusion", {"timesteps": 200}, "diffusion.timesteps 100 vs 200"),
    ("train", {"ema_decay": 0.0}, "train.ema_decay 0.9 vs 0.0"),
])
def test_a_resume_refuses_a_checkpoint_of_another_process_and_leaves_the_run_alone(two_step_run, tmp_path, section,
                                                                                  change, field):
    cache, original = two_step_run
    run = shutil.copytree(original, tmp_path / "run")
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    changes = {"train": {"steps": 4}}
    changes[section] = {**changes.get(section, {}), **change}
    cfg = stage_config("base64", "smoke").replace(**changes)
    with pytest.raises(MRNetError, match=re.escape(f"checkpoint {run / 'final.pt'} ") + ".*" + re.escape(field)):
        train(cfg, cache, run, resume=True, progress=False, grids=False)
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_a_finished_run_of_another_process_is_not_taken_for_the_configs(two_step_run, tmp_path):
    """The study skips training when a run folder's final checkpoint holds the config's steps: only if it was
    trained for that config."""
    cache, original = two_step_run
    run = shutil.copytree(original, tmp_path / "run")
    cfg = stage_config("base64", "smoke").replace(diffusion={"schedule": "cosine"}, train={"steps": 2})
    with pytest.raises(MRNetError, match=re.escape("diffusion.schedule linear vs cosine")):
        train_stage(cfg, cache, run, progress=False)
    assert train_stage(stage_config("base64", "smoke").replace(train={"steps": 2}), cache, run,
                       progress=False).trained is False


def test_load_stage_rebuilds_the_network_from_the_file_alone_with_its_ema_or_raw_weights(two_step_run):
    _, run = two_step_run
    payload = load_checkpoint(run / checkpoint.FINAL_CHECKPOINT)
    for where in (run, run / checkpoint.FINAL_CHECKPOINT):  # a run folder means its final checkpoint
        stage = checkpoint.load_stage(where)
        assert stage.path == run / checkpoint.FINAL_CHECKPOINT and stage.step == payload["step"] == 2
        assert stage.config == rebuild_config(payload) and not stage.model.training
        ema = {key.removeprefix("module."): value for key, value in payload["ema"].items() if key != "n_averaged"}
        assert_same(dict(stage.model.state_dict()), ema)
    raw = checkpoint.load_stage(run, use_ema=False)
    assert_same(dict(raw.model.state_dict()), dict(payload["model"]))
    assert any(not torch.equal(raw.model.state_dict()[key], value) for key, value in ema.items())


def test_every_refusal_of_a_payload_says_what_is_wrong(tmp_path):
    good = make_payload(1)
    for payload, message in [
        ([1, 2], "the payload to save is a list, not a checkpoint dict"),
        ({"step": 1}, "the payload to save lacks format_version, config; a checkpoint needs format_version, config, step"),
        ({**good, "format_version": 9}, "the payload to save has format_version 9; this code reads version 1"),
        ({**good, "step": 1.0}, "the payload to save needs an int 'step' and a dict 'config' (StageConfig.to_dict())"),
        ({**good, "config": "sr1"}, "the payload to save needs an int 'step' and a dict 'config'"),
        ({**good, "log": {np.int64(3): 1}}, "a key of payload['log'] is a numpy.int64; checkpoints hold only tensors "
                                             "and plain data (dict, list, tuple, str, numbers, None), so convert it "
                                             "(e.g. torch.from_numpy)"),
        ({**good, "log": [1, np.float32(2)]}, "payload['log'][1] is a numpy.float32"),
    ]:
        with pytest.raises(MRNetError) as error:
            save_checkpoint(tmp_path, payload)
        assert str(error.value).startswith(message), str(error.value)
    with pytest.raises(MRNetError, match="keep=0: a checkpoint directory must keep at least 1 checkpoint"):
        save_checkpoint(tmp_path, good, keep=0)
    assert files_in(tmp_path) == []


def test_keep_one_keeps_the_newest_step_and_a_named_save_removes_no_step(tmp_path):
    nested = tmp_path / "runs" / "a" / "b"  # folders made as needed
    save_checkpoint(nested, make_payload(1), keep=1)
    save_checkpoint(nested, make_payload(2), keep=1)
    assert files_in(nested) == ["step_00000002.pt"]
    save_checkpoint(nested, make_payload(3), keep=2)
    save_checkpoint(nested, make_payload(3), keep=2, name="final.pt")  # not a step: the two newest steps stay
    assert files_in(nested) == ["final.pt", "step_00000002.pt", "step_00000003.pt"]
    for step in (4, 5, 6):
        save_checkpoint(nested, make_payload(step))  # the default keeps 3
    assert files_in(nested) == ["final.pt", "step_00000004.pt", "step_00000005.pt", "step_00000006.pt"]


def test_a_damaged_file_names_the_error_type_and_its_first_line(tmp_path):
    path = save_checkpoint(tmp_path, make_payload(1))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(MRNetError, match=r"^checkpoint .*step_00000001\.pt is truncated or corrupt \((\w+Error): [^\n]+\)$"):
        load_checkpoint(path)
    assert checkpoint._first_line(ValueError("x" * 300 + "\nsecond line")) == "x" * 200
    assert checkpoint._first_line(ValueError("  \n")) == ""


def test_the_message_without_a_path_and_the_advice_follow_what_differs():
    trained = stage_config("base64", "smoke")
    payload = make_payload(1, trained)
    with pytest.raises(MRNetError) as network:
        check_compatible(payload, trained.replace(unet={"channels": (8, 16, 32)}))
    assert str(network.value) == (
        "the checkpoint holds a different base64_swin network than the smoke config expects (checkpoint vs expected: "
        "unet.channels (8, 16, 16) vs (8, 16, 32)); use the checkpoint trained for this config, or rebuild the model "
        "from the checkpoint's own config (rebuild_config)")
    with pytest.raises(MRNetError) as both:
        check_compatible(payload, trained.replace(unet={"channels": (8, 16, 32)}, train={"lr_schedule": "plateau"}),
                         resume=True)
    assert "(8, 16, 32); train.lr_schedule warmup vs plateau); use the checkpoint" in str(both.value)
    without_ema = stage_config("base64", "smoke").replace(train={"ema_decay": 0.0})
    check_compatible(make_payload(1, without_ema), without_ema, resume=True)  # no EMA on either side: compatible


def test_load_stage_can_compile_and_a_load_error_names_its_first_line(two_step_run, tmp_path, monkeypatch):
    _, run = two_step_run
    compiled = checkpoint.load_stage(run, compile=True)  # wrapped only; compiling waits for the first call
    assert isinstance(compiled.model, torch._dynamo.eval_frame.OptimizedModule)
    assert_same(dict(compiled.model._orig_mod.state_dict()), dict(checkpoint.load_stage(run).model.state_dict()))

    def broken_zip(*args, **kwargs):
        raise RuntimeError("PytorchStreamReader failed reading zip archive\nsecond line")

    monkeypatch.setattr(torch, "load", broken_zip)
    with pytest.raises(MRNetError, match=r"final\.pt is truncated or corrupt \(RuntimeError: PytorchStreamReader failed "
                                         r"reading zip archive\)$"):
        load_checkpoint(run / checkpoint.FINAL_CHECKPOINT)
