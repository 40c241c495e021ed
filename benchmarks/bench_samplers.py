"""Which fast sampler keeps the quality of full-length ancestral sampling, per stage, on trained checkpoints.

    python -m benchmarks.bench_samplers     # run_all.sh's demo checkpoints and slice cache

For every stage, the reference is ancestral DDPM over the full chain (T steps, Ho et al.
2020); against it, all from the same seeds: the deterministic DDIM (Song et al. 2021) at 50
and 100 steps and DPM-Solver++(2M) (Lu et al. 2022) at 10, 15, 20, 25 and 50 steps, and the
stochastic SDE-DPM-Solver++(2M) at 25, 50 and 100 steps and ancestral DDPM on the chain
respaced to 100 and 250 steps (Nichol & Dhariwal 2021).

- Super-resolution stages (sr1, sr2): held-out valid slices are downsampled to the stage's
  input and super-resolved; PSNR and SSIM against the real slice, and the radial power-
  spectrum distance to the real slices. A sampler is within the margin when its PSNR is at
  most 0.2 dB and its SSIM at most 0.01 below the reference's and its spectrum distance at
  most 10% above it. (PSNR and SSIM reward smooth outputs: a deterministic sampler with few
  steps can score higher than the full ancestral chain while losing fine texture, which
  the spectrum distance sees.)
- Generating stages (base64, single256): the offline distribution measures of
  mrnet_utils.evaluation.metrics. Against the reference's own samples: intensity-histogram distance
  and radial power-spectrum distance (how close each sampler's images are to the full
  chain's). For the margin, each sampler's distances to the real held-out slices and its
  diversity (mean pairwise MS-SSIM): within the margin when neither distance to the real
  slices exceeds the reference's by more than 10% and its diversity is within 10% of the
  reference's.

On a GPU the samplers run as sample_stage runs them: under bf16 autocast when the preset
asks for mixed precision; `--precision fp32` runs them in strict fp32 (no TF32) instead, so
that two runs show what bf16 does to trained models' samples.

The default for a stage is the fewest network evaluations within the margin. Sample counts
are small by default so that a CPU run takes tens of minutes; raise them for tighter numbers.
Prints a Markdown table per stage and writes each, with the machine and the command, to its
own section of benchmarks/RESULTS.md as soon as the stage is done (`--no-write` to skip), so
stages can be run, or rerun, one at a time.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import (
    RESULTS,
    command_line,
    load_line,
    machine_info,
    machine_lines,
    markdown_table,
    parse_sampler,
    strict_fp32,
    update_section,
)
from mrnet_utils.data.slices import SliceDataset, degrade, to_unit
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import metrics
from mrnet_utils.pipeline import TrainedStage, sample_stage
from mrnet_utils.stages import STAGES
from mrnet_utils.training.checkpoint import load_stage

CANDIDATES = (
    "ddim:50", "ddim:100", "dpmpp:10", "dpmpp:15", "dpmpp:20", "dpmpp:25", "dpmpp:50",
    "dpmpp_sde:25", "dpmpp_sde:50", "dpmpp_sde:100", "ddpm:100", "ddpm:250",
)
FULL_CHAIN = "ddpm:T"


@dataclass(frozen=True)
class Margins:
    psnr_db: float = 0.2  # SR: PSNR may fall this far below the reference's
    ssim: float = 0.01  # SR: SSIM may fall this far below the reference's
    distance: float = 0.10  # distances to real data may exceed the reference's by this share
    diversity: float = 0.10  # generation: diversity may differ from the reference's by this share


def _held_out(data: Path, resolution: int, count: int) -> torch.Tensor:
    """`count` valid slices spread evenly over the split (neighbouring slices of one exam look alike)."""
    images = SliceDataset(data, "valid", resolution).images
    if count > len(images):
        raise MRNetError(f"asked for {count} held-out slices, but the valid split of {data} holds {len(images)}")
    return images[torch.linspace(0, len(images) - 1, count).round().long()]


def _sample(stage: TrainedStage, seeds: list[int], low_res, sampler: tuple[str, int], batch_size: int, bf16: bool):
    started = time.perf_counter()
    images = sample_stage(stage.model, stage.config, seeds, low_res, sampler, batch_size, bf16, progress=False)
    return images, (time.perf_counter() - started) / len(seeds)


def compare_super_resolution(
    stage: TrainedStage, data: Path, count: int, samplers: list[tuple[str, int]], batch_size: int, bf16: bool,
    margins: Margins,
) -> list[dict]:
    """Rows of PSNR/SSIM against the real slice per sampler; the first sampler is the reference."""
    cfg = stage.config
    truth = _held_out(data, cfg.resolution, count)
    low_res = degrade(truth, cfg.low_resolution)
    seeds = list(range(count))
    rows = []
    for sampler in samplers:
        images, seconds = _sample(stage, seeds, low_res, sampler, batch_size, bf16)
        psnr = float(metrics.psnr(to_unit(images), to_unit(truth)).mean())
        ssim = float(metrics.ssim(to_unit(images), to_unit(truth)).mean())
        spectrum = metrics.power_spectrum_distance(to_unit(images), to_unit(truth))
        if not rows:
            reference_psnr, reference_ssim, reference_spectrum = psnr, ssim, spectrum
        within = (
            psnr >= reference_psnr - margins.psnr_db
            and ssim >= reference_ssim - margins.ssim
            and spectrum <= (1 + margins.distance) * reference_spectrum
        )
        rows.append(_row(cfg.name, sampler, seconds, within, {
            "PSNR (dB)": psnr, "dPSNR": psnr - reference_psnr, "SSIM": ssim, "dSSIM": ssim - reference_ssim,
            "spectrum dist. to real": spectrum,
        }))
    return rows


def compare_generation(
    stage: TrainedStage,
    data: Path,
    count: int,
    samplers: list[tuple[str, int]],
    batch_size: int,
    bf16: bool,
    margins: Margins,
    other_seeds: bool = False,
) -> list[dict]:
    """Rows of distribution measures per sampler; the first sampler is the reference.

    `other_seeds` adds the reference sampler once more, from the next `count` seeds: how far
    the measures move by chance alone, against which the margin can be judged.
    """
    cfg = stage.config
    real = to_unit(SliceDataset(data, "valid", cfg.resolution).images)
    seeds = list(range(count))
    runs = [(sampler, seeds) for sampler in samplers]
    if other_seeds:
        runs.insert(1, (samplers[0], list(range(count, 2 * count))))
    rows = []
    for sampler, run_seeds in runs:
        images, seconds = _sample(stage, run_seeds, None, sampler, batch_size, bf16)
        images = to_unit(images)
        if not rows:
            reference = images
        measures = {
            "hist. dist. to full chain": metrics.histogram_distance(images, reference),
            "spectrum dist. to full chain": metrics.power_spectrum_distance(images, reference),
            "hist. dist. to real": metrics.histogram_distance(images, real),
            "spectrum dist. to real": metrics.power_spectrum_distance(images, real),
            "diversity (MS-SSIM)": metrics.diversity_ms_ssim(images),
        }
        if not rows:
            first = measures
        within = (
            measures["hist. dist. to real"] <= (1 + margins.distance) * first["hist. dist. to real"]
            and measures["spectrum dist. to real"] <= (1 + margins.distance) * first["spectrum dist. to real"]
            and abs(measures["diversity (MS-SSIM)"] - first["diversity (MS-SSIM)"])
            <= margins.diversity * first["diversity (MS-SSIM)"]
        )
        seeds_note = "" if run_seeds is seeds else f", seeds {run_seeds[0]}-{run_seeds[-1]}"
        rows.append(_row(cfg.name, sampler, seconds, within, measures, seeds_note))
    return rows


def _row(
    stage_name: str, sampler: tuple[str, int], seconds: float, within: bool, measures: dict, seeds_note: str = ""
) -> dict:
    return {
        "stage": stage_name,
        "sampler": f"{sampler[0]} {sampler[1]}{seeds_note}",
        "NFE": sampler[1],
        "s / image": seconds,
        **measures,
        "within margin": "yes" if within else "no",
    }


def fewest_steps(rows: list[dict]) -> str:
    """The sampler with the fewest network evaluations within the margin (the reference itself if none).

    Only samplers with fewer evaluations than the reference count; on a tie, DPM-Solver++ (ODE
    or SDE form) is preferred: it is second order, DDIM and ancestral DDPM are first order.
    """
    passing = [row for row in rows[1:] if row["within margin"] == "yes" and row["NFE"] < rows[0]["NFE"]]
    if not passing:
        return f"{rows[0]['sampler']} (no faster sampler within the margin)"
    return min(passing, key=lambda row: (row["NFE"], not row["sampler"].startswith("dpmpp")))["sampler"]


def compare_stage(args: argparse.Namespace, name: str, device: torch.device, margins: Margins) -> tuple[str, str]:
    """One stage's comparison: (section title, Markdown body with the machine, the margin, the table)."""
    stage = load_stage(args.checkpoints / f"{name}_{args.variant}", device)
    bf16 = device.type == "cuda" and args.precision == "config" and stage.config.train.mixed_precision
    cfg, timesteps = stage.config, stage.config.diffusion.timesteps
    samplers = [parse_sampler(text, timesteps) for text in (args.reference, *args.samplers)]
    samplers = [samplers[0]] + [s for s in samplers[1:] if s != samplers[0]]
    if cfg.is_super_resolution:
        rows = compare_super_resolution(stage, args.data, args.sr_images, samplers, args.batch_size, bf16, margins)
        what = f"{args.sr_images} held-out slices super-resolved; PSNR, SSIM and spectrum distance against them"
        margin = (
            f"PSNR at most {margins.psnr_db} dB and SSIM at most {margins.ssim} below the full chain's, "
            f"spectrum distance at most {margins.distance:.0%} above it"
        )
    else:
        count = args.base_images if name == "base64" else args.single_images
        rows = compare_generation(stage, args.data, count, samplers, args.batch_size, bf16, margins, args.other_seeds)
        what = f"{count} samples; distances to the full chain's samples and to the real held-out slices"
        if args.other_seeds:
            what += f"; the full chain also from seeds {count}-{2 * count - 1}, to show the spread by chance alone"
        margin = (
            f"distances to the real slices at most {margins.distance:.0%} above the full chain's, "
            f"diversity within {margins.diversity:.0%} of it"
        )
    device_kind = "CPU" if device.type == "cpu" else f"GPU, {'bf16 autocast' if bf16 else 'fp32'}"
    title = f"Samplers: {cfg.name}, {cfg.preset} checkpoints, {device_kind}"
    body = "\n\n".join([
        machine_lines(machine_info(device), command_line("benchmarks.bench_samplers", args.argv)),
        f"Checkpoint {stage.path} (step {stage.step}, T = {timesteps}); {what}. Within the margin: {margin}.",
        f"**Fewest network evaluations within the margin: {fewest_steps(rows)}.**",
        markdown_table(rows),
        load_line(),
    ])
    return title, body


def run(args: argparse.Namespace) -> str:
    """Every stage in turn; each stage's section is written to RESULTS.md as soon as it is done."""
    device = torch.device(args.device)
    margins = Margins(args.psnr_margin, args.ssim_margin, args.distance_margin, args.diversity_margin)
    report = []
    for name in args.stages:
        with strict_fp32() if args.precision == "fp32" else nullcontext():
            title, body = compare_stage(args, name, device, margins)
        print(f"## {title}\n\n{body}\n", flush=True)
        if not args.no_write:
            update_section(args.results, title, body)
        report.append(f"## {title}\n\n{body}")
    return "\n\n".join(report)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_samplers", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo/slices_coronal.npz"),
                        help="slice cache written by preprocess; its valid split is used (default: run_all.sh's)")
    parser.add_argument("--checkpoints", type=Path, default=Path("savepoints/demo"),
                        help="folder of run folders named <stage>_<variant>, each holding final.pt")
    parser.add_argument("--variant", choices=("swin", "noswin"), default="swin")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--reference", default=FULL_CHAIN, help="SAMPLER:STEPS; T means the schedule's length")
    parser.add_argument("--samplers", nargs="+", default=list(CANDIDATES), help="SAMPLER:STEPS candidates")
    parser.add_argument("--sr-images", type=int, default=4, help="held-out slices per super-resolution stage")
    parser.add_argument("--base-images", type=int, default=16, help="samples from base64")
    parser.add_argument("--single-images", type=int, default=8, help="samples from single256")
    parser.add_argument("--other-seeds", action="store_true",
                        help="generating stages: the full chain once more from other seeds (its spread by chance)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("config", "fp32"), default="config",
                        help="config: bf16 autocast on CUDA when the preset asks (as sample_stage does); fp32: strict fp32")
    parser.add_argument("--psnr-margin", type=float, default=Margins.psnr_db)
    parser.add_argument("--ssim-margin", type=float, default=Margins.ssim)
    parser.add_argument("--distance-margin", type=float, default=Margins.distance)
    parser.add_argument("--diversity-margin", type=float, default=Margins.diversity)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run(args)


if __name__ == "__main__":
    main()
