"""One training loop for every stage (DDPM, Ho et al. 2020; SR conditioning after Saharia et al. 2021).

The loop is written for one process or many (torchrun / DDP) without change:
- the data order and every random draw (timesteps, noise, conditioning-augmentation
  levels) are functions of (seed, step) over the *global* batch; each rank takes its
  slice. So a run resumed at step s continues exactly, and a run on k processes sees
  the same global batch as a run on one.
- rank 0 alone writes the log, the sample grids and the checkpoints.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from mrnet_utils import checkpoint, conditioning
from mrnet_utils.config import StageConfig
from mrnet_utils.data import SliceDataset, downsample
from mrnet_utils.diffusion import NoiseSchedule, diffusion_loss
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks import UNet
from mrnet_utils.pipeline import mixed_precision, sample_stage, save_grid

FINAL_CHECKPOINT = "final.pt"
LOG_FILE = "train_log.csv"
LOG_COLUMNS = ("step", "loss", "lr", "images_per_s", "elapsed_s", "skipped")


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path  # the final checkpoint
    steps: int
    trained_steps: int  # steps this call trained: 0 when a resumed run was already complete
    seconds: float  # wall-clock training time, summed over resumed segments
    images_per_second: float  # of this call's steps; NaN when it trained none
    skipped_batches: int


@functools.lru_cache(maxsize=4)
def _epoch_permutation(epoch: int, num_items: int, seed: int) -> torch.Tensor:
    return torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def global_batch_indices(step: int, batch_size: int, num_items: int, seed: int) -> torch.Tensor:
    """Dataset indices of the global batch at `step`: consecutive epochs, each a seeded permutation."""
    positions = range(step * batch_size, (step + 1) * batch_size)
    return torch.stack([_epoch_permutation(p // num_items, num_items, seed)[p % num_items] for p in positions])


@dataclass(frozen=True)
class _Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global-batch tensor."""
        return tensor.chunk(self.world_size)[self.rank]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a per-rank value over all ranks (a collective: every rank must call it)."""
        if self.world_size > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value


def _init_distributed(cfg: StageConfig) -> _Distributed:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return _Distributed()
    if cfg.train.batch_size % world_size:
        raise MRNetError(
            f"batch_size={cfg.train.batch_size} is not divisible by the {world_size} processes; "
            "choose a global batch that is a multiple of the world size"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return _Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


def _device() -> torch.device:
    """This process's GPU (torchrun's LOCAL_RANK), set as current before NCCL starts; else the CPU."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@dataclass(frozen=True)
class _Batch:
    x0: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    extra_args: dict


def _draw_batch(
    cfg: StageConfig,
    step: int,
    images: torch.Tensor,
    low_res: torch.Tensor | None,
    labels: torch.Tensor,
    schedule: NoiseSchedule,
) -> _Batch:
    """The global batch at `step` with all its random draws, from a generator seeded by (seed, step)."""
    generator = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step)
    batch = cfg.train.batch_size
    index = global_batch_indices(step, batch, len(images), cfg.train.seed)
    x0 = images[index]
    t = torch.randint(0, schedule.timesteps, (batch,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    extra_args = {}
    if low_res is not None:
        aug = cfg.conditioning
        level = (
            conditioning.sample_aug_levels(batch, aug.max_level, generator) if aug.enabled else torch.zeros(batch)
        )
        aug_noise = torch.randn(x0.shape, generator=generator)
        cond, level = conditioning.make_condition(low_res[index], cfg.resolution, level, aug_noise)
        extra_args = {"cond": cond, "aug_level": level}
    if cfg.unet.num_labels:
        # Classifier-free guidance (Ho & Salimans 2022): a share of rows trains the null label (-1).
        dropped = torch.rand(batch, generator=generator) < cfg.train.label_dropout
        extra_args["labels"] = torch.where(dropped[:, None], -1.0, labels[index])
    return _Batch(x0, t, noise, extra_args)


def _to(batch: _Batch, distributed: _Distributed, device: torch.device, channels_last: bool) -> _Batch:
    def move(tensor: torch.Tensor) -> torch.Tensor:
        tensor = distributed.shard(tensor).to(device, non_blocking=True)
        if channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    return _Batch(move(batch.x0), move(batch.t), move(batch.noise), {k: move(v) for k, v in batch.extra_args.items()})


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise MRNetError(f"output folder {out_dir} is not writable ({error.strerror}); choose another --out") from None


def _refuse_earlier_run(out_dir: Path) -> None:
    """A fresh run may not share its folder with an earlier one: its log would continue the earlier
    run's, and a later resume could pick up the earlier run's newer step checkpoints."""
    earlier = sorted(out_dir.glob("step_*.pt")) + sorted(out_dir.glob(FINAL_CHECKPOINT))
    if earlier:
        raise MRNetError(
            f"run folder {out_dir} already holds a training run ({earlier[-1].name}); continue or extend it "
            "with --resume (resume=True), or choose a new --out folder to start afresh"
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


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows past `step`, written after the checkpoint a resumed run starts from."""
    if not path.exists():
        return
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
    path.unlink()
    for row in rows:
        _append_log(path, row)


def train(
    cfg: StageConfig,
    data_path: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    compile: bool = False,
) -> TrainResult:
    """Train one stage on the cached slices at `data_path`, writing checkpoints and logs to `out_dir`.

    `compile=True` runs the network through `torch.compile` (worth it on a GPU for long runs;
    the first steps are slow while it compiles). Checkpoints are the same either way.
    """
    cfg.validate()
    out_dir = Path(out_dir)
    device = _device()
    distributed = _init_distributed(cfg)
    if not resume:
        _refuse_earlier_run(out_dir)
    if distributed.is_main:
        _check_writable(out_dir)

    dataset = SliceDataset(data_path, "train", cfg.resolution)
    images = dataset.images
    low_res = downsample(images, cfg.low_resolution) if cfg.is_super_resolution else None
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    schedule_on_device = NoiseSchedule(schedule.betas.to(device), schedule.prediction)

    torch.manual_seed(cfg.train.seed)  # parameter initialisation, identical on every rank
    model = UNet(cfg.unet).to(device)
    channels_last = device.type == "cuda"
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
        model.parameters(),
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        fused=device.type == "cuda",
    )
    warmup = max(cfg.train.warmup_steps, 1)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))

    start_step, seconds_before, skipped = 0, 0.0, 0
    if resume:
        found = _resume_point(out_dir)
        if found is not None:
            payload = checkpoint.load_checkpoint(found)
            checkpoint.check_compatible(payload, cfg, path=found)
            model.load_state_dict(payload["model"])
            if ema is not None:
                ema.load_state_dict(payload["ema"])
            optimizer.load_state_dict(payload["optimizer"])
            lr_scheduler.load_state_dict(payload["lr_scheduler"])
            torch.set_rng_state(payload["rng"]["torch"])
            start_step = payload["step"]
            seconds_before = payload["log"]["seconds"]
            skipped = payload["log"]["skipped"]
            if distributed.is_main:
                _truncate_log(out_dir / LOG_FILE, start_step)
                print(f"resuming {cfg.name} from {found} at step {start_step}")

    net = DistributedDataParallel(model) if distributed.world_size > 1 else model
    if compile:
        net = torch.compile(net)  # after DDP, so that DDP's optimizer splits the graph at its buckets
    autocast = mixed_precision(cfg, device)

    def payload_at(step: int, seconds: float) -> dict:
        return {
            "format_version": checkpoint.FORMAT_VERSION,
            "config": cfg.to_dict(),
            "step": step,
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "log": {"seconds": seconds, "skipped": skipped},
        }

    last_good = checkpoint.latest_checkpoint(out_dir) if distributed.is_main else None
    bar = tqdm(
        total=cfg.train.steps,
        initial=start_step,
        desc=f"train {cfg.name}",
        disable=not (progress and distributed.is_main),
    )
    started = time.perf_counter()
    window_start, window_images = started, 0
    try:  # close the bar when a step raises, so the error starts on a line of its own
        for step in range(start_step, cfg.train.steps):
            batch = _draw_batch(cfg, step, images, low_res, dataset.labels, schedule)
            batch = _to(batch, distributed, device, channels_last)
            with autocast:
                loss = diffusion_loss(
                    net, schedule_on_device, batch.x0, batch.t, batch.noise, cfg.diffusion.min_snr_gamma,
                    batch.extra_args,
                ).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            # One host synchronisation per step: non-finite gradients must never reach the weights.
            # The norm is taken after DDP has averaged the gradients, so it is the same on every rank
            # and all ranks take the same branch; a non-finite loss on any rank makes it non-finite.
            # (Testing this rank's loss instead could send the ranks down different paths: a deadlock.)
            if not torch.isfinite(grad_norm):
                if cfg.train.on_nonfinite != "skip":
                    raise MRNetError(
                        f"non-finite loss at step {step} of {cfg.name}; the last good checkpoint is "
                        f"{last_good or 'none (no checkpoint written yet)'} and is left intact. "
                        "Lower the learning rate or set on_nonfinite='skip'"
                    )
                # Skipped: weights, optimiser, LR schedule and EMA stay as they were, but the step
                # still counts, so the log row and checkpoint due at it are written all the same.
                skipped += 1
            else:
                optimizer.step()
                lr_scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
            done = step + 1
            window_images += cfg.train.batch_size
            bar.update(1)

            log_now = done % cfg.train.log_every == 0 or done == cfg.train.steps
            if log_now:
                loss = distributed.mean(loss.detach())  # the global batch's loss, as one process would log it
            if distributed.is_main and log_now:
                now = time.perf_counter()
                rate = window_images / max(now - window_start, 1e-9)
                window_start, window_images = now, 0
                row = {
                    "step": done,
                    "loss": f"{loss.item():.6f}",
                    "lr": f"{lr_scheduler.get_last_lr()[0]:.3e}",
                    "images_per_s": f"{rate:.2f}",
                    "elapsed_s": f"{seconds_before + now - started:.1f}",
                    "skipped": skipped,
                }
                _append_log(out_dir / LOG_FILE, row)
                bar.set_postfix(loss=row["loss"], img_s=row["images_per_s"])
            if distributed.is_main and cfg.train.sample_every and done % cfg.train.sample_every == 0:
                _write_sample_grid(model, ema, cfg, low_res, out_dir / f"samples_step_{done:08d}.png")
            if distributed.is_main and done % cfg.train.checkpoint_every == 0 and done < cfg.train.steps:
                elapsed = seconds_before + time.perf_counter() - started
                last_good = checkpoint.save_checkpoint(
                    out_dir, payload_at(done, elapsed), keep=cfg.train.keep_checkpoints
                )
    finally:
        bar.close()

    seconds = seconds_before + time.perf_counter() - started
    final = out_dir / FINAL_CHECKPOINT
    trained_steps = max(cfg.train.steps - start_step, 0)
    if distributed.is_main and trained_steps:
        checkpoint.save_checkpoint(out_dir, payload_at(cfg.train.steps, seconds), name=FINAL_CHECKPOINT)
        _write_sample_grid(model, ema, cfg, low_res, out_dir / "samples_final.png")
    if distributed.world_size > 1:
        dist.barrier()
    rate = trained_steps * cfg.train.batch_size / max(seconds - seconds_before, 1e-9) if trained_steps else math.nan
    return TrainResult(final, max(cfg.train.steps, start_step), trained_steps, seconds, rate, skipped)


def _write_sample_grid(
    model: torch.nn.Module, ema: AveragedModel | None, cfg: StageConfig, low_res: torch.Tensor | None, path: Path
) -> None:
    """A small grid of samples from the EMA weights, for watching training progress.

    Super-resolution stages show the upsampled inputs (top row) above their samples.
    """
    network = ema.module if ema is not None else model
    network.eval()
    condition = low_res[:4] if low_res is not None else None
    samples = sample_stage(network, cfg, seeds=list(range(4)), low_res=condition, progress=False)
    network.train()
    if condition is not None:
        samples = torch.cat([conditioning.upsample(condition, cfg.resolution), samples.cpu()])
    save_grid(samples, path, nrow=4)
