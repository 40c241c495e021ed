"""One training loop for every stage (DDPM, Ho et al. 2020; SR conditioning after Saharia et al. 2021).

`train` builds the training state, restores it when resuming, then repeats one step,
logging and checkpointing as the config says. It runs in one process or many (torchrun /
DDP) without change: every random draw is a function of (seed, step) over the global
batch (training.batches), and rank 0 alone writes the log, the sample grids and the
checkpoints.

On a shared cluster: rank 0 holds the run folder's lock (files.claim_folder), so a second
process aimed at it is refused; SIGTERM or SIGINT ends training at the end of the current
step with that step saved (`TrainingStopped`), and a resume continues it bit for bit.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mrnet_utils.config import StageConfig
from mrnet_utils.data.slices import SliceDataset
from mrnet_utils.diffusion import conditioning
from mrnet_utils.diffusion.losses import sample_timesteps
from mrnet_utils.diffusion.processes import Process, build_process
from mrnet_utils.diffusion.schedules import to_process
from mrnet_utils.errors import MRNetError
from mrnet_utils.files import claim_folder
from mrnet_utils.interrupts import Interrupted, StopRequest
from mrnet_utils.networks import build_network
from mrnet_utils.pipeline import bf16_autocast, sample_stage, save_grid
from mrnet_utils.presets import default_sampler
from mrnet_utils.progress import track
from mrnet_utils.training import checkpoint
from mrnet_utils.training.batches import Batch, draw_batch, to_device
from mrnet_utils.training.checkpoint import FINAL_CHECKPOINT
from mrnet_utils.training.distributed import Distributed, init_distributed, process_device
from mrnet_utils.training.log import LOG_FILE, EventLog, append_log, truncate_log


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path  # the final checkpoint
    steps: int
    trained_steps: int  # steps this call trained: 0 when a resumed run was already complete
    seconds: float  # wall-clock training time, summed over resumed segments
    images_per_second: float  # of this call's steps; NaN when it trained none
    skipped_batches: int


class TrainingStopped(Interrupted):
    """SIGTERM or SIGINT stopped training: at the end of step `step`, saved to `checkpoint` (`resume=True`
    continues from it), or, after a second signal, at once (`checkpoint`: the newest one written before)."""

    def __init__(self, signum: int, message: str, checkpoint: Path | None, step: int, resumable: bool) -> None:
        super().__init__(signum, message, parameter="resume" if resumable else None)
        self.checkpoint, self.step = checkpoint, step


@dataclass
class TrainState:
    """Everything a checkpoint holds besides the config: the network, its EMA, the optimiser and the counters."""

    model: torch.nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0
    seconds_before: float = 0.0  # training time of earlier segments of a resumed run
    skipped: int = 0  # batches skipped for non-finite gradients (or outside grad_norm_window)
    val_loss: float = math.nan  # the last validation loss (lr_schedule="plateau")
    data: dict | None = None  # the slice cache trained on (`data_record`), checked when resuming

    def payload(self, cfg: StageConfig, step: int, seconds: float) -> dict:
        """The checkpoint at `step`, `seconds` into training."""
        return {
            "format_version": checkpoint.FORMAT_VERSION,
            "config": cfg.to_dict(),
            "step": step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "log": {"seconds": seconds, "skipped": self.skipped, "val_loss": self.val_loss},
            "data": self.data,
        }


def build_state(cfg: StageConfig, device: torch.device, channels_last: bool) -> TrainState:
    """A freshly initialised network (seeded by cfg.train.seed, the same on every rank), EMA, AdamW and warm-up."""
    torch.manual_seed(cfg.train.seed)
    model = build_network(cfg.unet).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Parameters only: the UNet's buffers are constants (Swin's integer relative-position index),
    # and averaging an integer buffer truncates it (torch computes decay * index in floats).
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=False)
        if cfg.train.ema_decay > 0
        else None
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=device.type == "cuda"
    )
    if cfg.train.lr_schedule == "plateau":  # stepped once per epoch on the validation loss (`validation_loss`)
        lr_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.train.plateau_factor, patience=cfg.train.plateau_patience
        )
    else:
        warmup = max(cfg.train.warmup_steps, 1)
        lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return TrainState(model, ema, optimizer, lr_scheduler)


def restore(state: TrainState, cfg: StageConfig, out_dir: Path) -> Path | None:
    """Load the newest good checkpoint of `out_dir` into `state`; its path, or None when there is none."""
    found = _resume_point(out_dir)
    if found is None:
        return None
    payload = checkpoint.load_checkpoint(found)
    checkpoint.check_compatible(payload, cfg, path=found, resume=True)
    _check_same_data(payload.get("data"), state.data, found)  # absent from checkpoints before 2026-12-01
    state.model.load_state_dict(payload["model"])
    if state.ema is not None:
        state.ema.load_state_dict(payload["ema"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.lr_scheduler.load_state_dict(payload["lr_scheduler"])
    torch.set_rng_state(payload["rng"]["torch"])
    state.step = payload["step"]
    state.seconds_before = payload["log"]["seconds"]
    state.skipped = payload["log"]["skipped"]
    state.val_loss = payload["log"].get("val_loss", math.nan)  # absent from checkpoints before 2026-11-30
    return found


def train_step(
    state: TrainState,
    net: torch.nn.Module,
    batch: Batch,
    process: Process,
    cfg: StageConfig,
    autocast: AbstractContextManager,
    last_good: Path | None,
) -> torch.Tensor:
    """One optimisation step on this rank's share of the batch; returns the loss (not synchronised).

    A step whose gradient norm is not finite changes nothing (on_nonfinite="skip") or stops
    training with the last good checkpoint named (on_nonfinite="stop"); one whose norm lies
    outside cfg.train.grad_norm_window (when set) changes nothing either.
    """
    with autocast:
        loss = process.loss(net, batch.x0, batch.t, batch.noise, batch.extra_args, batch.y0).mean()
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else math.inf  # the norm is measured either way
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), clip)
    # One host synchronisation per step: non-finite gradients must never reach the weights.
    # The norm is taken after DDP has averaged the gradients, so it is the same on every rank
    # and all ranks take the same branch; a non-finite loss on any rank makes it non-finite.
    # (Testing this rank's loss instead could send the ranks down different paths: a deadlock.)
    if not torch.isfinite(grad_norm):
        if cfg.train.on_nonfinite != "skip":
            raise MRNetError(
                f"non-finite loss at step {state.step} of {cfg.name}; the last good checkpoint is "
                f"{last_good or 'none (no checkpoint written yet)'} and is left intact. "
                "Lower the learning rate or set on_nonfinite='skip'"
            )
        # Skipped: weights, optimiser, LR schedule and EMA stay as they were, but the step
        # still counts, so the log row and checkpoint due at it are written all the same.
        state.skipped += 1
    elif cfg.train.grad_norm_window and not _inside(float(grad_norm), cfg.train.grad_norm_window):
        state.skipped += 1
    else:
        state.optimizer.step()
        if cfg.train.lr_schedule == "warmup":
            state.lr_scheduler.step()
        if state.ema is not None:
            state.ema.update_parameters(state.model)
    state.step += 1
    return loss


def _inside(value: float, window: tuple[float, ...]) -> bool:
    low, high = window
    return low <= value <= high


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, cfg: StageConfig, images: torch.Tensor, low_res: torch.Tensor | None, epoch: int,
    device: torch.device,
) -> float:
    """The mean diffusion loss over the valid slices, with timesteps and noise drawn afresh for each
    epoch (seeded by seed and epoch), as the reference study measured it for its LR schedule.
    Conditioning is clean (level 0): the loss measures the network, not the augmentation."""
    generator = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + 10**9 + epoch)
    process = build_process(cfg.diffusion, device)
    model.eval()
    total = 0.0
    for start in range(0, len(images), cfg.train.batch_size):
        x0 = to_process(images[start : start + cfg.train.batch_size], cfg.diffusion.data_range)
        t = sample_timesteps(len(x0), cfg.diffusion.timesteps, generator)
        noise = torch.randn(x0.shape, generator=generator)
        extra, y0 = {}, None
        if low_res is not None:
            low = low_res[start : start + cfg.train.batch_size].to(device)
            clean = torch.zeros(x0.shape, device=device)  # level 0: the condition is not noised
            extra, y0 = process.condition(low, cfg.resolution, 0.0, clean)
        losses = process.loss(model, x0.to(device), t.to(device), noise.to(device), extra, y0)
        total += float(losses.sum())
    model.train()
    return total / len(images)


def train(
    cfg: StageConfig,
    data_path: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    compile: bool = False,
    grids: bool = True,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train one stage on the cached slices at `data_path`, writing checkpoints and logs to `out_dir`.

    `resume=True` continues from the newest good checkpoint in `out_dir` (or extends a finished
    run to cfg.train.steps); it refuses a run already past cfg.train.steps and a run trained on
    another slice cache. `compile=True` runs the network through `torch.compile` (worth it
    on a GPU for long runs; the first steps are slow while it compiles). Checkpoints are the
    same either way. `grids=False` skips the sample grids (every cfg.train.sample_every steps
    and at the end), which sample with the stage's quick sampler. With cfg.train.epochs, the
    run's steps are that many passes over the training slices (`steps_for_epochs`). `device`: None
    trains on the GPU if there is one (under torchrun, each process's own).

    SIGTERM or SIGINT ends training at the end of the current step: that step is checkpointed and
    `TrainingStopped` raised, naming the checkpoint; a second signal stops at once. While it runs,
    this process is the run folder's only writer: another process's `train` there is refused, and a
    run folder this call created is removed again if it fails before writing anything.
    """
    cfg.validate()
    out_dir = Path(out_dir)
    device = process_device(device)
    distributed = init_distributed(cfg.train.batch_size)
    claimed = claim_folder(out_dir) if distributed.is_main else nullcontext()
    with claimed, EventLog(out_dir, distributed.is_main) as events:
        if not resume:
            _refuse_earlier_run(out_dir)
        return _train(cfg, data_path, out_dir, resume, progress, compile, grids, device, distributed, events)


def _train(
    cfg: StageConfig, data_path: str | Path, out_dir: Path, resume: bool, progress: bool, compile: bool,
    grids: bool, device: torch.device, distributed: Distributed, events: EventLog,
) -> TrainResult:
    dataset, low_res = _split(cfg, data_path, "train")
    images = dataset.images
    steps_per_epoch = -(-len(images) // cfg.train.batch_size)
    cfg = steps_for_epochs(cfg, len(images))
    if cfg.train.lr_schedule == "plateau":  # the validation loss steps the learning rate
        valid, valid_low = _split(cfg, data_path, "valid")
        valid = valid.images
    process = build_process(cfg.diffusion, device, load_run=checkpoint.load_stage)
    channels_last = device.type == "cuda"
    state, found = _start(cfg, process, data_path, dataset, out_dir, resume, device, channels_last, distributed, events)
    start_step = state.step
    net = DistributedDataParallel(state.model) if distributed.world_size > 1 else state.model
    if compile:
        net = torch.compile(net)  # after DDP, so that DDP's optimizer splits the graph at its buckets
    autocast = bf16_autocast(device, cfg.train.mixed_precision)
    last_good = checkpoint.latest_checkpoint(out_dir) if distributed.is_main else None
    bar = track(desc=f"train {cfg.name}", total=cfg.train.steps, initial=start_step, unit="step",
                enabled=progress and distributed.is_main)
    started = time.perf_counter()
    window = _RateWindow(started)
    with StopRequest(f"training {cfg.name}") as stop:
        try:  # close the bar when a step raises, so the error starts on a line of its own
            while state.step < cfg.train.steps:
                batch = draw_batch(cfg, process, state.step, images, low_res, dataset.labels)
                batch = to_device(batch, distributed, device, channels_last)
                loss = train_step(state, net, batch, process, cfg, autocast, last_good)
                done = state.step
                window.images += cfg.train.batch_size
                bar.update(1)
                if cfg.train.lr_schedule == "plateau" and done % steps_per_epoch == 0:
                    state.val_loss = validation_loss(state.model, cfg, valid, valid_low, done // steps_per_epoch, device)
                    state.lr_scheduler.step(state.val_loss)
                elapsed = state.seconds_before + time.perf_counter() - started
                if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                    loss = distributed.mean(loss.detach())  # the global batch's loss, as one process would log it
                    if distributed.is_main:
                        _log(state, loss, window, elapsed, out_dir, events, bar)
                if distributed.is_main and grids and cfg.train.sample_every and done % cfg.train.sample_every == 0:
                    _grid(state, cfg, low_res, out_dir / f"samples_step_{done:08d}.png", progress, events)
                if done == cfg.train.steps:
                    break  # the final checkpoint follows
                due = done % cfg.train.checkpoint_every == 0
                if distributed.is_main and due:
                    payload = state.payload(cfg, done, elapsed)
                    last_good = checkpoint.save_checkpoint(out_dir, payload, keep=cfg.train.keep_checkpoints)
                # Every rank stops at the same step, whichever received the signal (torchrun passes it to all).
                signum = distributed.max(stop.requested or 0, device)
                if signum:
                    _stop_after(state, cfg, done, elapsed, signum, saved=due, out_dir=out_dir, distributed=distributed)
        except Interrupted as error:
            if isinstance(error, TrainingStopped):
                raise
            raise _stopped_at_once(error, cfg, state.step, last_good) from None
        finally:
            bar.close()

        seconds = state.seconds_before + time.perf_counter() - started
        final = out_dir / FINAL_CHECKPOINT
        trained_steps = state.step - start_step
        # A run resumed at exactly its last step from a step checkpoint has no final checkpoint yet.
        if distributed.is_main and (trained_steps or found != final):
            checkpoint.save_checkpoint(out_dir, state.payload(cfg, cfg.train.steps, seconds), name=FINAL_CHECKPOINT)
        signum = distributed.max(stop.requested or 0, device)
    return _finish(state, cfg, out_dir, low_res, seconds, trained_steps, signum, grids, progress, distributed, events)


def _start(
    cfg: StageConfig, process: Process, data_path: str | Path, dataset: SliceDataset, out_dir: Path, resume: bool,
    device: torch.device, channels_last: bool, distributed: Distributed, events: EventLog,
) -> tuple[TrainState, Path | None]:
    """The state training starts from: restored from the newest good checkpoint (`resume`), else fresh (a
    distilled student starting as its teacher); and that checkpoint, or None. The log restarts at its step."""
    state = build_state(cfg, device, channels_last)
    state.data = data_record(data_path, dataset)
    found = restore(state, cfg, out_dir) if resume else None
    initial = process.initial_weights() if found is None else None
    if initial is not None:
        state.model.load_state_dict(initial)
    if found is not None:
        _refuse_fewer_steps(state, cfg, out_dir, found)
        if distributed.is_main:
            print(f"resuming {cfg.name} from {found} at step {state.step}")
    if distributed.is_main:  # rows past the checkpoint (all of them when none was written) are rewritten
        truncate_log(out_dir / LOG_FILE, state.step)
        events.restart(state.step)
    return state, found


def _stop_after(
    state: TrainState, cfg: StageConfig, done: int, elapsed: float, signum: int, saved: bool, out_dir: Path,
    distributed: Distributed,
) -> None:
    """A stop signal during step `done`: that step checkpointed (unless it just was, `saved`), then TrainingStopped."""
    if distributed.is_main and not saved:
        checkpoint.save_checkpoint(out_dir, state.payload(cfg, done, elapsed), keep=cfg.train.keep_checkpoints)
    distributed.barrier()
    checkpoint_path = out_dir / checkpoint.step_filename(done)  # by rank 0, for every rank to name
    raise TrainingStopped(
        signum, f"{signal.Signals(signum).name} stopped training {cfg.name} at step {done} of "
        f"{cfg.train.steps}, saved as {checkpoint_path}; continue it with resume=True", checkpoint_path, done, True,
    )


def _stopped_at_once(error: Interrupted, cfg: StageConfig, step: int, last_good: Path | None) -> TrainingStopped:
    """A second signal stopped a step midway: nothing of it is saved; name the newest checkpoint, if any."""
    if last_good is None:
        then = "no checkpoint was written yet: start it again"
    else:
        then = f"the newest checkpoint is {last_good}: continue from it with resume=True"
    return TrainingStopped(error.signum, f"{error} at step {step}; {then}", last_good, step, last_good is not None)


def _log(state: TrainState, loss: torch.Tensor, window: _RateWindow, elapsed: float, out_dir: Path,
         events: EventLog, bar) -> None:
    """One log row: to train_log.csv, TensorBoard and the progress display."""
    row = _log_row(state, loss, window, elapsed)
    append_log(out_dir / LOG_FILE, row)
    events.add_row(row)
    bar.set_postfix(loss=row["loss"], img_s=row["images_per_s"])


def _grid(state: TrainState, cfg: StageConfig, low_res: torch.Tensor | None, path: Path, progress: bool,
          events: EventLog) -> None:
    """A sample grid at the state's step, as a PNG and in TensorBoard."""
    _write_sample_grid(state, cfg, low_res, path, progress)
    events.add_grid(path, state.step)


def _split(cfg: StageConfig, data_path: str | Path, split: str) -> tuple[SliceDataset, torch.Tensor | None]:
    """A split's targets and, for a super-resolution stage, their low-res inputs, row for row: both made from the
    256x256 slices by the config's degradation."""
    targets = SliceDataset(data_path, split, cfg.resolution, cfg.degradation)
    low = SliceDataset(data_path, split, cfg.low_resolution, cfg.degradation).images if cfg.is_super_resolution else None
    return targets, low


def _finish(
    state: TrainState, cfg: StageConfig, out_dir: Path, low_res: torch.Tensor | None, seconds: float,
    trained_steps: int, signum: int, grids: bool, progress: bool, distributed: Distributed, events: EventLog,
) -> TrainResult:
    """After the last step, its final checkpoint written: the final sample grid, unless a stop signal came."""
    final = out_dir / FINAL_CHECKPOINT
    if signum:  # the run is complete: only the sample grid is left out
        distributed.barrier()
        left_out = "; its sample grid is left out" if trained_steps and grids else ""
        raise TrainingStopped(signum, f"{signal.Signals(signum).name} stopped training {cfg.name} after its last "
                              f"step; the run is complete: {final}{left_out}", final, state.step, False)
    if distributed.is_main and trained_steps and grids:
        _grid(state, cfg, low_res, out_dir / "samples_final.png", progress, events)
    distributed.barrier()
    training_seconds = seconds - state.seconds_before
    rate = trained_steps * cfg.train.batch_size / max(training_seconds, 1e-9) if trained_steps else math.nan
    return TrainResult(final, cfg.train.steps, trained_steps, seconds, rate, state.skipped)


def data_record(data_path: str | Path, dataset: SliceDataset) -> dict:
    """What a checkpoint records of the slice cache it was trained on (payload "data")."""
    metadata = dataset.metadata
    return {
        "path": str(Path(data_path).resolve()),
        "content_sha256": dataset.cache_digest,
        **{key: metadata.get(key) for key in ("plane", "selection", "normalisation", "central_slices")},
    }


def _check_same_data(stored: dict | None, current: dict | None, path: Path) -> None:
    """Refuse to continue a run on slices other than those it was trained on."""
    if stored is None or current is None or stored["content_sha256"] == current["content_sha256"]:
        return
    raise MRNetError(
        f"checkpoint {path} was trained on {_describe_data(stored)}, but data_path is {_describe_data(current)}; "
        "resume with the cache the run was trained on, or start a new run in another out_dir",
        parameter="data_path",
    )


def _describe_data(record: dict) -> str:
    settings = ", ".join(f"{key} {record[key]}" for key in ("plane", "selection", "normalisation") if record.get(key))
    return f"{record['path']} ({settings}; content {record['content_sha256'][:12]})"


def _refuse_fewer_steps(state: TrainState, cfg: StageConfig, out_dir: Path, found: Path) -> None:
    """A resumed run may not end before the step it has reached (it would name a final checkpoint it never wrote)."""
    if state.step <= cfg.train.steps:
        return
    if found.name == FINAL_CHECKPOINT:
        where = f"its final checkpoint is {found}, at step {state.step}"
    else:
        where = f"its newest checkpoint is {found}; it has no final checkpoint yet"
    raise MRNetError(
        f"run folder {out_dir} has already trained {state.step} steps, more than steps={cfg.train.steps}: {where}. "
        f"Resume with at least {state.step} steps, or train the shorter run in a new out_dir",
        parameter="steps",
    )


def steps_for_epochs(cfg: StageConfig, train_slices: int) -> StageConfig:
    """`cfg` with train.steps set to its epochs over `train_slices` training slices (the last batch of an
    epoch may be short); unchanged when it counts steps (epochs = 0)."""
    if not cfg.train.epochs:
        return cfg
    return cfg.replace(train={"steps": cfg.train.epochs * -(-train_slices // cfg.train.batch_size)})


class _RateWindow:
    """Images trained since the last log row, and when that row was written: the logged images/s."""

    def __init__(self, start: float) -> None:
        self.start, self.images = start, 0

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.images / max(now - self.start, 1e-9)
        self.start, self.images = now, 0
        return rate


def _log_row(state: TrainState, loss: torch.Tensor, window: _RateWindow, elapsed: float) -> dict:
    return {
        "step": state.step,
        "loss": f"{loss.item():.6f}",
        "lr": f"{state.lr_scheduler.get_last_lr()[0]:.3e}",
        "images_per_s": f"{window.rate():.2f}",
        "elapsed_s": f"{elapsed:.1f}",
        "skipped": state.skipped,
        "val_loss": "" if math.isnan(state.val_loss) else f"{state.val_loss:.6f}",
    }


def _refuse_earlier_run(out_dir: Path) -> None:
    """A fresh run may not share its folder with an earlier one: its log would continue the earlier
    run's, and a later resume could pick up the earlier run's newer step checkpoints."""
    earlier = sorted(out_dir.glob("step_*.pt")) + sorted(out_dir.glob(FINAL_CHECKPOINT))
    if earlier:
        raise MRNetError(
            f"run folder {out_dir} already holds a training run ({earlier[-1].name}); continue or extend it "
            "with resume=True, or choose a new out_dir to start afresh",
            parameter="resume",
        )


def _resume_point(out_dir: Path) -> Path | None:
    """The newest good checkpoint: the final one (a finished run, perhaps to be extended) or the latest step."""
    latest = checkpoint.latest_checkpoint(out_dir)
    final = out_dir / FINAL_CHECKPOINT
    if final.exists():
        try:
            final_step = checkpoint.load_checkpoint(final)["step"]
        except MRNetError as error:
            warnings.warn(f"skipping {final}: {error}", stacklevel=2)
        else:
            if latest is None or final_step >= checkpoint.load_checkpoint(latest)["step"]:
                return final
    return latest


def _write_sample_grid(
    state: TrainState, cfg: StageConfig, low_res: torch.Tensor | None, path: Path, progress: bool
) -> None:
    """A small grid of samples from the EMA weights with the stage's quick sampler (presets.default_sampler), for
    watching training.

    Super-resolution stages show the upsampled inputs (top row) above their samples. `progress` shows
    the sampler's steps (a large network on a CPU takes minutes even for four images).
    """
    network = state.ema.module if state.ema is not None else state.model
    network.eval()
    condition = low_res[:4] if low_res is not None else None
    samples = sample_stage(
        network, cfg, seeds=list(range(4)), low_res=condition, sampler=default_sampler(cfg, quick=True),
        mixed_precision=cfg.train.mixed_precision, progress=False, step_progress=progress,
    )
    network.train()
    if condition is not None:
        samples = torch.cat([conditioning.upsample(condition, cfg.resolution), samples.cpu()])
    save_grid(samples, path, nrow=4)
