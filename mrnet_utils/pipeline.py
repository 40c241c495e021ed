"""Generation pipelines: a cascade of stages chained in order (base 64 -> SR 128 -> SR 256), or one stage.

Every stage is rebuilt from its checkpoint alone (training.checkpoint.load_stage).
Sampling is batched, and image i depends only on its own seed: its starting noise,
its per-step noise and its conditioning-augmentation noise come from generators
seeded by (seed, the stage's random stream in stages.STAGES), never from a shared stream.
Each stage samples with its default sampler (presets.default_sampler: its full chain, or a faster
sampler shown equivalent to it) unless the caller names one; its process (diffusion.processes)
builds the condition and runs the sampler.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from mrnet_utils.config import StageConfig
from mrnet_utils.data.slices import to_unit
from mrnet_utils.diffusion.guidance import Guided, check_guidance
from mrnet_utils.diffusion.processes import SamplerChoice, build_process, process_class
from mrnet_utils.diffusion.samplers import generators_from_seeds, noise_from_seeds
from mrnet_utils.diffusion.schedules import from_process
from mrnet_utils.errors import MRNetError
from mrnet_utils.files import result_folder, write_atomically, write_json
from mrnet_utils.presets import default_sampler
from mrnet_utils.progress import track
from mrnet_utils.stages import check_chain


@dataclass(frozen=True)
class TrainedStage:
    """A trained stage: its network (EMA weights where stored), its config and where it came from."""

    model: torch.nn.Module  # a networks.build_network network, or its torch.compile wrapper (checkpoint.load_stage(compile=True)), which calls the same way
    config: StageConfig
    step: int
    path: Path | None  # the checkpoint it was loaded from


def bf16_autocast(device: torch.device, enabled: bool = True) -> torch.autocast:
    """bf16 autocast on CUDA when `enabled`; off on the CPU, where bf16 is slow."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and enabled)


def sample_stage(
    model: torch.nn.Module,
    cfg: StageConfig,
    seeds: list[int],
    low_res: torch.Tensor | None = None,
    sampler: SamplerChoice | None = None,
    batch_size: int = 8,
    mixed_precision: bool = True,
    progress: bool = True,
    draws: int = 1,
    step_progress: bool = False,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Sample one image per seed from one stage; super-resolution stages take one low-res image per seed.

    `sampler` is (name, steps); None: the stage's default (presets.default_sampler).
    `mixed_precision` samples under bf16 autocast on CUDA. `draws` > 1 returns the mean of that
    many draws per image (each from its own noise; the same condition): an estimate of the
    posterior mean E[x_0 | low-res], at `draws` times the cost. `progress` shows a bar over the
    batches, `step_progress` one over each batch's sampler steps (for a few slow images). Returns a
    CPU float tensor (N, 1, R, R) in [-1, 1].

    `labels` (N, 3), one row per seed (guidance.label_rows; NULL for a label left unsaid), asks a
    label-conditional stage for those labels, with classifier-free guidance of scale `guidance`
    (diffusion.guidance: 0 unconditional, 1 conditional, more pushes further towards the labels).
    """
    sampler = resolve_sampler(cfg, sampler)
    return _sample_stage(model, cfg, seeds, low_res, sampler, batch_size, mixed_precision, progress, draws,
                         step_progress, labels, guidance)


def resolve_sampler(cfg: StageConfig, sampler: SamplerChoice | None) -> SamplerChoice:
    """`sampler`, or the stage's default when None, checked against the stage's process (with the stage named)."""
    sampler = sampler or default_sampler(cfg)
    try:
        process_class(cfg.diffusion.process).check_sampler(cfg.diffusion, sampler)
    except MRNetError as error:
        raise MRNetError(f"stage {cfg.stage} ({sampler[0]}): {error}", parameter=error.parameter) from None
    return sampler


def _sample_stage(
    model: torch.nn.Module, cfg: StageConfig, seeds: list[int], low_res: torch.Tensor | None, sampler: SamplerChoice,
    batch_size: int, mixed_precision: bool, progress: bool, draws: int, step_progress: bool,
    labels: torch.Tensor | None, guidance: float,
) -> torch.Tensor:
    """`sample_stage` with a sampler already resolved and checked."""
    spec = cfg.spec
    if spec.is_super_resolution != (low_res is not None):
        raise MRNetError(f"stage {cfg.stage} {'needs' if spec.is_super_resolution else 'takes no'} low-res input")
    if draws < 1:
        raise MRNetError(f"draws={draws} must be at least 1")
    if low_res is not None:
        if len(low_res) != len(seeds):
            raise MRNetError(f"got {len(low_res)} low-res images for {len(seeds)} seeds; give one per seed")
        side = spec.low_resolution
        # Checked here: the upsampling would take any size and hide a mix-up of stages.
        if low_res.ndim != 4 or tuple(low_res.shape[1:]) != (1, side, side):
            raise MRNetError(
                f"stage {cfg.stage} takes low-res images of shape (N, 1, {side}, {side}), got {tuple(low_res.shape)}"
            )
    check_guidance(labels, guidance)
    if labels is not None:
        if not cfg.unet.num_labels:
            raise MRNetError(f"stage {cfg.stage} was trained without labels (num_labels=0); it cannot take labels",
                             parameter="labels")
        if len(labels) != len(seeds):
            raise MRNetError(f"got {len(labels)} label rows for {len(seeds)} seeds; give one per seed", parameter="labels")
        model = Guided(model, guidance)
    device = next(model.parameters()).device
    process = build_process(cfg.diffusion, device)
    shape = (1, cfg.resolution, cfg.resolution)
    level_value = cfg.conditioning.sample_level if cfg.conditioning.enabled else 0.0

    chunks = []
    for start in track(range(0, len(seeds), batch_size), desc=f"sample {cfg.name}", unit="batch", enabled=progress):
        chunk = seeds[start : start + batch_size]
        extra_args, y0 = {}, None
        if low_res is not None:
            level = torch.full((len(chunk),), level_value, device=device)
            aug_noise = noise_from_seeds(chunk, shape, device, stream=spec.condition_stream)
            extra_args, y0 = process.condition(low_res[start : start + batch_size].to(device), cfg.resolution, level,
                                               aug_noise)
        if labels is not None:
            extra_args["labels"] = labels[start : start + batch_size].to(device)
        total = 0
        for draw in range(draws):
            noise = noise_from_seeds(chunk, shape, device, stream=spec.noise_stream, draw=draw)
            generators = generators_from_seeds(chunk, device, stream=spec.noise_stream, draw=draw)
            with bf16_autocast(device, mixed_precision):
                images = process.sample(model, sampler, noise, extra_args, generators, y0, step_progress)
            check_finite_samples(images, cfg.stage, chunk)  # before the clamp, which would hide inf
            total = total + from_process(images.float(), cfg.diffusion.data_range).clamp(-1, 1)
        chunks.append((total / draws).cpu())
    return torch.cat(chunks)


def sample_cascade(
    stages: Sequence[TrainedStage],
    seeds: list[int],
    samplers: dict[str, SamplerChoice] | None = None,
    batch_size: int = 8,
    mixed_precision: bool = True,
    progress: bool = True,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> dict[int, torch.Tensor]:
    """A generating stage, then each super-resolution stage on the output of the one before (Ho et al. 2021).

    Returns the images at every resolution. `samplers` maps a stage name to (sampler, steps);
    a stage not named uses its default. Every stage's sampler is resolved and checked once, before any
    stage samples. `labels` and `guidance` (sample_stage) go to every stage that takes labels, and must reach one.
    """
    check_chain([stage.config.stage for stage in stages])
    check_guidance(labels, guidance)
    labelled = {stage.config.stage for stage in stages if stage.config.unet.num_labels}
    if labels is not None and not labelled:
        raise MRNetError("labels were given, but no stage of this pipeline was trained with labels "
                         "(train a label-conditional stage: train --labels)", parameter="labels")
    samplers = samplers or {}
    chosen = [resolve_sampler(stage.config, samplers.get(stage.config.stage)) for stage in stages]
    images: dict[int, torch.Tensor] = {}
    low_res = None
    for stage, sampler in zip(stages, chosen):
        steering = (labels, guidance) if stage.config.stage in labelled else (None, 1.0)
        low_res = _sample_stage(stage.model, stage.config, seeds, low_res, sampler, batch_size, mixed_precision,
                                progress, 1, False, *steering)
        images[stage.config.resolution] = low_res
    return images


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Save images in [-1, 1] as one grey-scale PNG grid, atomically."""
    grid = make_grid(to_unit(images.cpu()), nrow=nrow, padding=2, pad_value=1.0)
    return write_png(grid[0], path, "sample grid")


def write_png(image: torch.Tensor, path: str | Path, what: str) -> Path:
    """One (H, W) image in [0, 1] as an 8-bit grey PNG, written atomically."""
    pixels = Image.fromarray((image.float().numpy() * 255).round().astype(np.uint8))
    return write_atomically(path, lambda handle: pixels.save(handle, format="PNG"), what)


def check_finite_samples(images: torch.Tensor, stage_name: str | None, seeds: Sequence[int]) -> None:
    """Refuse images holding NaN or infinite values, in one line naming the stage that sampled them (None: not
    known), the seeds affected and the likely causes, before they reach the next stage or a file."""
    finite = torch.isfinite(images.reshape(len(images), -1)).all(dim=1).tolist()
    bad = [seed for seed, ok in zip(seeds, finite) if not ok]
    if not bad:
        return
    shown = ", ".join(map(str, bad[:8])) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
    source = f"stage {stage_name} sampled" if stage_name else "the samples hold"
    raise MRNetError(
        f"{source} NaN or infinite values for seed{'s' if len(bad) > 1 else ''} {shown} ({len(bad)} of {len(seeds)} "
        "images); nothing was written. Likely causes: non-finite weights in a checkpoint (train the stage again, or "
        "from an earlier checkpoint), or a guidance scale so large that the guided prediction overflows (lower "
        "--guidance)"
    )


def _save_npy(handle: BinaryIO, array: np.ndarray) -> None:
    """np.save through a buffer: np.save to a file reports a short write without its errno (ENOSPC, EFBIG)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    handle.write(buffer.getbuffer())


SAMPLE_FILES = ("sample_*.png", "samples.npy", "grid.png", "samples.json")  # what write_samples writes


def write_samples(
    images: torch.Tensor, out_dir: str | Path, seeds: list[int], overwrite: bool = False,
    labels: dict[str, int] | None = None, guidance: float = 1.0, provenance: dict | None = None,
) -> Path:
    """A samples folder (`write_sample_files`), written whole: it appears at `out_dir` complete, with
    files.COMPLETE_FILE, or not at all (files.result_folder).

    `out_dir` must be new or empty, unless `overwrite`: then its earlier samples are replaced once the
    new set is complete, so that the folder never mixes two sets, and other files stay.
    """
    with result_folder(out_dir, overwrite, SAMPLE_FILES, "samples folder") as folder:
        write_sample_files(images, folder, seeds, labels, guidance, provenance)
    return Path(out_dir)


def write_sample_files(
    images: torch.Tensor, folder: Path, seeds: list[int], labels: dict[str, int] | None = None,
    guidance: float = 1.0, provenance: dict | None = None,
) -> None:
    """The files of a samples folder, into `folder` (one that files.result_folder is writing): one 8-bit PNG
    per image (`sample_<seed>.png`), `grid.png` (the first 64), `samples.npy`: the float stack in [-1, 1],
    and `samples.json` (strict JSON): the seeds, the labels asked for (by task; a task not named was left
    unsaid) with the guidance scale, and `provenance` (its keys as given: provenance.py's checkpoints,
    samplers and code). Images holding NaN or infinite values are refused (`check_finite_samples`).
    """
    if len(images) != len(seeds):
        raise MRNetError(f"got {len(images)} images for {len(seeds)} seeds; give one seed per image")
    check_finite_samples(images, None, seeds)
    images = images.float().cpu()
    for image, seed in zip(to_unit(images), seeds):
        write_png(image[0], folder / f"sample_{seed:06d}.png", "sample")
    write_atomically(folder / "samples.npy", lambda handle: _save_npy(handle, images.numpy()), "sample array")
    save_grid(images[:64], folder / "grid.png")
    record = {"seeds": seeds, "labels": labels or {}, "guidance": guidance if labels else None, **(provenance or {})}
    write_json(folder / "samples.json", record, "sample record")
