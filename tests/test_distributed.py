"""Multi-process training: DDP over gloo on the CPU, launched by torchrun as a user would.

One torchrun launch runs this file as a script with two processes (`_worker` below). Each
process trains the smoke base64 stage three times in the same process group: once as is, once
with a poisoned loss on rank 1 only, once with a SIGTERM sent to rank 1 only. Each rank saves
the weights it ended with, so the tests here can compare the ranks with each other and with
one process on the same global batch.

Tolerance for "matches one process": after 4 AdamW steps at lr 1e-3, every weight and EMA
weight within 1e-4 of the single-process run (absolute; the weights themselves are O(0.1)).
The two runs differ only in float summation order: DDP averages two half-batch gradients
where one process takes the mean over the whole batch, and the thread counts differ. The
largest difference measured was 1.2e-6 (weights) and 3.6e-7 (EMA); training both ranks on
the same half of the batch instead gave 5e-3. The test also checks that training moved
the weights by more than 10x the tolerance.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch_threads import one_thread

from mrnet_utils import files
from mrnet_utils.presets import stage_config
from mrnet_utils.diffusion.processes import DDPM
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks.unet import UNet
from mrnet_utils.training import loop as training
from mrnet_utils.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# 4 steps of a global batch of 4 (2 per rank); a checkpoint after step 2 for the resume test.
CFG = stage_config("base64", "smoke").replace(train=dict(steps=4, checkpoint_every=2, log_every=1))
ATOL = 1e-4
POISON = {1: "nan", 2: "inf"}  # rank 1's loss at these (0-based) steps of the poisoned run


def _worker(cache: Path, out: Path) -> None:
    """Runs under torchrun: train twice, save what this rank ended with."""
    rank = int(os.environ["RANK"])
    trained = []

    class RecordingDDP(training.DistributedDataParallel):
        """DDP that remembers its module, so that each rank can save its own weights."""

        def __init__(self, module, *args, **kwargs):
            super().__init__(module, *args, **kwargs)
            trained.append(module)

    training.DistributedDataParallel = RecordingDDP
    result = training.train(CFG, cache, out / "ddp", progress=False)
    torch.save({"model": trained[-1].state_dict(), "skipped": result.skipped_batches}, out / f"rank{rank}_ddp.pt")

    real_loss, calls = DDPM.loss, itertools.count()  # the loss of the stage's process

    def poisoned_loss(*args, **kwargs):
        value = real_loss(*args, **kwargs)
        kind = POISON.get(next(calls)) if rank == 1 else None
        if kind == "nan":
            return value * float("nan")  # NaN gradients too
        if kind == "inf":
            return value + float("inf")  # an overflowed loss whose gradients stay finite
        return value

    DDPM.loss = poisoned_loss
    cfg = CFG.replace(train=dict(on_nonfinite="skip"))
    result = training.train(cfg, cache, out / "poisoned", progress=False)
    torch.save(
        {"model": trained[-1].state_dict(), "skipped": result.skipped_batches}, out / f"rank{rank}_poisoned.pt"
    )

    # A real SIGTERM to rank 1 alone, during the first step (as when only one node is preempted first).
    calls = itertools.count()

    def signalled_loss(*args, **kwargs):
        if rank == 1 and next(calls) == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(*args, **kwargs)

    DDPM.loss = signalled_loss
    try:
        training.train(CFG, cache, out / "stopped", progress=False)
        stopped = None
    except training.TrainingStopped as stop:
        stopped = {"signal": stop.signum, "step": stop.step}
    (out / f"rank{rank}_stopped.json").write_text(json.dumps(stopped), encoding="utf-8")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One CPU thread, as each torchrun worker has (OMP_NUM_THREADS=1): tiny networks run faster so."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def ddp_run(tiny_cache, tmp_path_factory):
    """The two-process torchrun launch; its output folder."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, __file__, str(tiny_cache), str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def single_run(tiny_cache, tmp_path_factory):
    """The same training in one process."""
    out = tmp_path_factory.mktemp("single")
    training.train(CFG, tiny_cache, out, progress=False)
    return out


def _final(run: Path) -> dict:
    return torch.load(run / training.FINAL_CHECKPOINT, weights_only=True)


def _max_difference(first: dict, second: dict) -> float:
    assert first.keys() == second.keys()
    floats = [k for k in first if first[k].is_floating_point()]
    return max((first[k].double() - second[k].double()).abs().max().item() for k in floats)


def _logged_losses(run: Path) -> list[float]:
    with (run / training.LOG_FILE).open(encoding="utf-8") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_both_ranks_end_with_identical_weights(ddp_run):
    rank0, rank1 = (torch.load(ddp_run / f"rank{r}_ddp.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0["model"][k], rank1["model"][k]) for k in rank0["model"])
    # and rank 0's are what it saved
    assert _max_difference(rank0["model"], _final(ddp_run / "ddp")["model"]) == 0


@pytest.mark.slow
def test_two_ranks_match_one_process_on_the_same_global_batch(ddp_run, single_run):
    ddp, single = _final(ddp_run / "ddp"), _final(single_run)
    assert ddp["step"] == single["step"] == CFG.train.steps
    assert _max_difference(ddp["model"], single["model"]) < ATOL
    assert _max_difference(ddp["ema"], single["ema"]) < ATOL
    # The tolerance is small against what training changed.
    torch.manual_seed(CFG.train.seed)
    initial = UNet(CFG.unet).state_dict()
    assert _max_difference(initial, single["model"]) > 10 * ATOL
    # Rank 0 logs the loss of the global batch, as one process does.
    assert _logged_losses(ddp_run / "ddp") == pytest.approx(_logged_losses(single_run), rel=1e-4)
    # Only rank 0 wrote: one log row per step, one final grid.
    assert len(_logged_losses(ddp_run / "ddp")) == CFG.train.steps
    assert (ddp_run / "ddp" / "samples_final.png").is_file()


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_on_one_process(tiny_cache, ddp_run, single_run, tmp_path):
    # The optimiser state is not sharded and the data order is global, so the world size may change.
    shutil.copy(ddp_run / "ddp" / "step_00000002.pt", tmp_path / "step_00000002.pt")
    training.train(CFG, tiny_cache, tmp_path, resume=True, progress=False)
    resumed, single = _final(tmp_path), _final(single_run)
    assert _max_difference(resumed["model"], single["model"]) < ATOL
    assert _max_difference(resumed["optimizer"]["state"][0], single["optimizer"]["state"][0]) < ATOL


@pytest.mark.slow
def test_a_nonfinite_loss_on_one_rank_takes_the_same_branch_on_every_rank(ddp_run):
    rank0, rank1 = (torch.load(ddp_run / f"rank{r}_poisoned.pt", weights_only=True) for r in (0, 1))
    # The NaN step is skipped everywhere; the overflowed loss with finite gradients is taken everywhere.
    assert rank0["skipped"] == rank1["skipped"] == 1
    assert all(torch.equal(rank0["model"][k], rank1["model"][k]) for k in rank0["model"])
    assert all(torch.isfinite(v).all() for v in rank0["model"].values())


@pytest.mark.slow
def test_a_stop_signal_to_one_rank_stops_every_rank_after_the_same_step_with_it_saved(ddp_run):
    stops = [json.loads((ddp_run / f"rank{rank}_stopped.json").read_text(encoding="utf-8")) for rank in (0, 1)]
    assert stops == [{"signal": signal.SIGTERM, "step": 1}] * 2  # rank 0 got no signal, and stopped with rank 1
    stopped = ddp_run / "stopped"
    # Step 1 is no scheduled checkpoint (every 2): rank 0 wrote it for the stop.
    assert load_checkpoint(stopped / "step_00000001.pt")["step"] == 1
    assert not (stopped / training.FINAL_CHECKPOINT).exists() and not (stopped / files.LOCK_FILE).exists()


def test_a_global_batch_that_does_not_split_evenly_is_refused(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(MRNetError, match="batch_size=4 is not divisible by the 3 processes"):
        training.train(CFG, tiny_cache, tmp_path, progress=False)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
