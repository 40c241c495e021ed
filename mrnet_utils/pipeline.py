"""Generation pipelines: the cascade (base 64 -> SR 128 -> SR 256) and the single-stage 256 model.

Every stage is rebuilt from its checkpoint alone (the checkpoint stores the config).
Sampling is batched, and image i depends only on its own seed: its starting noise,
its per-step noise and its conditioning-augmentation noise come from generators
seeded by (seed, stage), never from a shared stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from mrnet_utils import checkpoint, conditioning
from mrnet_utils.config import StageConfig
from mrnet_utils.diffusion import NoiseSchedule
from mrnet_utils.errors import MRNetError
from mrnet_utils.networks import UNet
from mrnet_utils.samplers import SAMPLERS, generators_from_seeds, noise_from_seeds

# Distinct random streams per stage of the cascade, so that the same seed gives unrelated noise at each stage.
STAGE_STREAM = {"base64": 0, "sr1": 1, "sr2": 2, "single256": 3}


@dataclass(frozen=True)
class Stage:
    """A trained stage: its network (EMA weights where stored), its config and where it came from."""

    model: UNet  # or its torch.compile wrapper (load_stage(compile=True)), which calls the same way
    config: StageConfig
    step: int
    path: Path


def load_stage(
    path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True, compile: bool = False
) -> Stage:
    """Rebuild a stage from its checkpoint alone; a run folder means its final checkpoint.

    `compile=True` wraps the network in `torch.compile`: worth it for many samples on a
    GPU; the first batch (and a smaller last one) is slow while it compiles. (Channels-last
    weights, which training uses on a GPU, made the base model's forward pass faster but
    SR2's slower on an H200: benchmarks/RESULTS.md. Sampling keeps the default layout.)
    """
    path = Path(path)
    if path.is_dir():
        path = path / "final.pt"
    payload = checkpoint.load_checkpoint(path)
    cfg = StageConfig.from_dict(payload["config"])
    model = UNet(cfg.unet)
    if use_ema and payload.get("ema") is not None:
        # torch.optim.swa_utils.AveragedModel keeps the network under `module.` plus a step counter.
        state = {k.removeprefix("module."): v for k, v in payload["ema"].items() if k.startswith("module.")}
    else:
        state = payload["model"]
    model.load_state_dict(state)
    model = model.to(device).eval()
    return Stage(torch.compile(model) if compile else model, cfg, payload["step"], path)


def mixed_precision(cfg: StageConfig, device: torch.device) -> torch.autocast:
    """The autocast a stage trains and samples under: bf16 on CUDA when its config asks, else off."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.train.mixed_precision)


def sample_stage(
    model: UNet,
    cfg: StageConfig,
    seeds: list[int],
    low_res: torch.Tensor | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> torch.Tensor:
    """Sample one image per seed from one stage; SR stages take one low-res image per seed.

    Returns a CPU float tensor (N, 1, R, R) in [-1, 1].
    """
    sampler = sampler or cfg.sampler
    steps = steps or cfg.sample_steps
    if sampler not in SAMPLERS:
        raise MRNetError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if cfg.is_super_resolution != (low_res is not None):
        raise MRNetError(f"stage {cfg.stage} {'needs' if cfg.is_super_resolution else 'takes no'} low-res input")
    if low_res is not None:
        if len(low_res) != len(seeds):
            raise MRNetError(f"got {len(low_res)} low-res images for {len(seeds)} seeds; give one per seed")
        side = cfg.low_resolution
        # Checked here: the upsampling would take any size and hide a mix-up of stages.
        if low_res.ndim != 4 or tuple(low_res.shape[1:]) != (1, side, side):
            raise MRNetError(
                f"stage {cfg.stage} takes low-res images of shape (N, 1, {side}, {side}), got {tuple(low_res.shape)}"
            )
    device = next(model.parameters()).device
    schedule = NoiseSchedule.from_config(cfg.diffusion)
    schedule = NoiseSchedule(schedule.betas.to(device), schedule.prediction)
    stream = STAGE_STREAM[cfg.stage]
    shape = (1, cfg.resolution, cfg.resolution)
    autocast = mixed_precision(cfg, device)

    chunks = []
    for start in tqdm(range(0, len(seeds), batch_size), desc=f"sample {cfg.name}", disable=not progress):
        chunk = seeds[start : start + batch_size]
        noise = noise_from_seeds(chunk, shape, device, stream=stream)
        extra_args = {}
        if low_res is not None:
            level_value = cfg.conditioning.sample_level if cfg.conditioning.enabled else 0.0
            level = torch.full((len(chunk),), level_value, device=device)
            aug_noise = noise_from_seeds(chunk, shape, device, stream=stream + len(STAGE_STREAM))
            cond, level = conditioning.make_condition(
                low_res[start : start + batch_size].to(device), cfg.resolution, level, aug_noise
            )
            extra_args = {"cond": cond, "aug_level": level}
        generators = generators_from_seeds(chunk, device, stream=stream)
        with autocast:
            images = SAMPLERS[sampler](model, schedule, noise, steps, extra_args=extra_args, generators=generators)
        chunks.append(images.float().clamp(-1, 1).cpu())
    return torch.cat(chunks)


def sample_cascade(
    base: Stage,
    sr1: Stage,
    sr2: Stage,
    seeds: list[int],
    samplers: dict[str, tuple[str, int]] | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[int, torch.Tensor]:
    """Base 64 -> SR1 128 -> SR2 256 (Ho et al. 2021). Returns the images at every resolution.

    `samplers` maps a stage name to (sampler, steps); a stage not named uses its config's default.
    """
    expected = {"base64": base, "sr1": sr1, "sr2": sr2}
    for stage_name, stage in expected.items():
        if stage.config.stage != stage_name:
            raise MRNetError(f"{stage.path} holds stage {stage.config.stage}, but the cascade needs {stage_name} there")
    samplers = samplers or {}
    images: dict[int, torch.Tensor] = {}
    low_res = None
    for stage_name, stage in expected.items():
        sampler, steps = samplers.get(stage_name, (None, None))
        low_res = sample_stage(stage.model, stage.config, seeds, low_res, sampler, steps, batch_size, progress)
        images[stage.config.resolution] = low_res
    return images


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Save images in [-1, 1] as one grey-scale PNG grid."""
    grid = make_grid(((images.float().cpu() + 1) / 2).clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    Image.fromarray((grid[0].numpy() * 255).round().astype(np.uint8)).save(path)
    return Path(path)


def write_samples(images: torch.Tensor, out_dir: str | Path, seeds: list[int]) -> Path:
    """One 8-bit PNG per image (named by seed), a grid, and `samples.npy`: the float stack in [-1, 1]."""
    out_dir = Path(out_dir)
    if len(images) != len(seeds):
        raise MRNetError(f"got {len(images)} images for {len(seeds)} seeds; give one seed per image")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for image, seed in zip(images, seeds):
            pixels = ((image[0].float().cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(out_dir / f"sample_{seed:06d}.png")
        np.save(out_dir / "samples.npy", images.float().cpu().numpy())
        save_grid(images[:64], out_dir / "grid.png")
    except OSError as error:
        raise MRNetError(f"could not write samples to {out_dir} ({error.strerror}); choose another --out") from None
    return out_dir
