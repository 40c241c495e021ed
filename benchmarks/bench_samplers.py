"""Which fast sampler is equivalent to a stage's full chain, chosen on tuning exams only.

    python -m benchmarks.bench_samplers     # run_all.sh's demo checkpoints and slice cache

For every stage the reference is its process's full chain: ancestral DDPM over all T steps
(Ho et al. 2020) for a ddpm stage, ResShift's T-step chain for a resshift stage. Against it,
from the same seeds: for ddpm stages DDIM (Song et al. 2021), DPM-Solver++(2M) and its SDE form
(Lu et al. 2022) and ancestral DDPM respaced (Nichol & Dhariwal 2021); for resshift stages the
chain respaced to fewer steps.

Nothing here is measured on a reported slice: the real slices come only from the valid exams
the preset sets aside for tuning (`StudySettings.tuning_exams`; study.data.held_out with
exams="tune"), which the study's tables leave out, and the sample sizes are fixed by the
arguments before the run.

A sampler counts as equivalent to the chain only when the 90% interval of its paired
difference from the chain lies inside the margin on every measure (two one-sided tests at the
5% level, Schuirmann 1987), not when its point estimate does:
- super-resolution stages: per slice, PSNR (margin 0.2 dB), SSIM (0.01) and the spectrum error
  against the real slice (10% of the chain's), paired by slice and bootstrapped by exam;
- generating stages: the intensity-histogram and power-spectrum distances to the real tuning
  slices and the diversity (mean pairwise MS-SSIM), each within 10% of the chain's value,
  paired by seed and bootstrapped over seeds (and real exams).
The default for a stage is the equivalent sampler with the fewest network evaluations.

Prints a Markdown table per stage and writes it, with the machine and the command, to its own
section of benchmarks/RESULTS.md as soon as the stage is done (`--no-write` to skip).
"""

from __future__ import annotations

import argparse
import itertools
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
)
from benchmarks.sections import update_section
from mrnet_utils.presets import preset
from mrnet_utils.data.slices import to_unit
from mrnet_utils.diffusion.processes import process_class
from mrnet_utils.evaluation import metrics, statistics, tables
from mrnet_utils.pipeline import TrainedStage, sample_stage
from mrnet_utils.stages import STAGES
from mrnet_utils.study.data import held_out
from mrnet_utils.training.checkpoint import load_stage

# Samplers tried on a stage whose process takes them; a process that takes none of them is tried with each
# of its own samplers at every step count below its T.
CANDIDATES = (
    "ddim:50", "ddim:100", "dpmpp:10", "dpmpp:15", "dpmpp:20", "dpmpp:25", "dpmpp:50",
    "dpmpp_sde:25", "dpmpp_sde:50", "dpmpp_sde:100", "ddpm:100", "ddpm:250",
)
CONFIDENCE = 0.90  # the two one-sided tests at the 5% level


@dataclass(frozen=True)
class Margins:
    psnr_db: float = 0.2
    ssim: float = 0.01
    relative: float = 0.10  # spectrum error, distances to the real slices, diversity: share of the chain's value


def full_chain(stage: TrainedStage) -> tuple[str, int]:
    """The reference: the stage's process's own chain over all T steps."""
    return process_class(stage.config.diffusion.process).default_sampler(stage.config.diffusion)


def candidates(stage: TrainedStage, texts: list[str] | None) -> list[tuple[str, int]]:
    """The samplers to try: `texts` (SAMPLER:STEPS), else `CANDIDATES`, else every shorter run of the process's own."""
    cfg = stage.config.diffusion
    takes = process_class(cfg.process).samplers
    if texts is None:
        texts = [text for text in CANDIDATES if text.partition(":")[0] in takes]
        texts = texts or [f"{name}:{steps}" for name in takes for steps in range(1, cfg.timesteps)]
    chosen = [parse_sampler(text, cfg.timesteps) for text in texts]
    return [s for s in chosen if s[0] in takes and s[1] <= cfg.timesteps and s != full_chain(stage)]


def _sample(stage: TrainedStage, seeds: list[int], low_res, sampler: tuple[str, int], batch_size: int, bf16: bool):
    started = time.perf_counter()
    images = sample_stage(stage.model, stage.config, seeds, low_res, sampler, batch_size, bf16, progress=False)
    return images, (time.perf_counter() - started) / len(seeds)


def _equivalence_row(sampler, seconds, comparisons: list[statistics.Comparison], margins: dict[str, float]) -> dict:
    row = {"sampler": f"{sampler[0]} {sampler[1]}", "NFE": sampler[1], "s / image": seconds}
    for comparison in comparisons:
        d = comparison.difference
        row[f"d{comparison.metric} [90% CI]"] = f"{d.mean:+.4g} [{d.low:+.4g}, {d.high:+.4g}]"
    row["equivalent"] = "yes" if all(statistics.equivalent(c, margins[c.metric]) for c in comparisons) else "no"
    return row


def compare_super_resolution(stage, data, count, tuning, samplers, batch_size, bf16, margins) -> list[dict]:
    """Per sampler: per-slice PSNR, SSIM and spectrum error paired with the chain's, bootstrapped by exam."""
    cfg = stage.config
    held = held_out(data, count, exams="tune", tuning=tuning)
    low, truth = held.at(cfg.low_resolution), to_unit(held.at(cfg.resolution))
    seeds = list(range(len(truth)))
    measured = {}
    for sampler in samplers:
        images, seconds = _sample(stage, seeds, low, sampler, batch_size, bf16)
        images = to_unit(images)
        measured[sampler] = seconds, {
            "psnr": metrics.psnr(images, truth).numpy(), "ssim": metrics.ssim(images, truth).numpy(),
            "spectrum_error": metrics.spectrum_error(images, truth).numpy(),
        }
    reference = measured[samplers[0]][1]
    limits = {"psnr": margins.psnr_db, "ssim": margins.ssim,
              "spectrum_error": margins.relative * float(reference["spectrum_error"].mean())}
    rows = []
    for sampler, (seconds, values) in measured.items():
        comparisons = [
            statistics.paired_comparison(f"{sampler}", "chain", metric, values[metric], reference[metric],
                                         held.exam_ids, higher_is_better=metric != "spectrum_error",
                                         confidence=CONFIDENCE)
            for metric in limits
        ]
        rows.append(_equivalence_row(sampler, seconds, comparisons, limits))
    return rows


def _diversity_matrix(images: torch.Tensor) -> np.ndarray:
    """MS-SSIM of every pair of images, (N, N); the diagonal is unused."""
    matrix = np.ones((len(images), len(images)))
    for i, j in itertools.combinations(range(len(images)), 2):
        matrix[i, j] = matrix[j, i] = float(metrics.ms_ssim(images[i : i + 1], images[j : j + 1]))
    return matrix


def _diversity(matrix: np.ndarray, draw: np.ndarray) -> float:
    """Mean MS-SSIM over pairs of a bootstrap draw of seeds, leaving out pairs of one seed with itself."""
    sub = matrix[np.ix_(draw, draw)]
    distinct = np.triu(draw[:, None] != draw[None, :], k=1)
    return float(sub[distinct].mean())


def compare_generation(stage, data, count, tuning, samplers, batch_size, bf16, margins, bootstrap=500) -> list[dict]:
    """Per sampler: distances to the real tuning slices and diversity, paired by seed with the chain's."""
    cfg = stage.config
    real = held_out(data, None, exams="tune", tuning=tuning)
    real_images = real.at(cfg.resolution)
    seeds = list(range(count))
    runs = {sampler: _sample(stage, seeds, None, sampler, batch_size, bf16) for sampler in samplers}
    names = {sampler: f"{sampler[0]} {sampler[1]}" for sampler in samplers}
    chain = names[samplers[0]]
    images = {names[s]: runs[s][0] for s in samplers}
    distances = tables.generation_comparisons(
        images, real_images, real.exam_ids, [(names[s], chain) for s in samplers], confidence=CONFIDENCE
    )
    point = {m: tables.generation_distance(m, to_unit(images[chain]), to_unit(real_images))
             for m in tables.GENERATION_DISTANCES}
    matrices = {name: _diversity_matrix(to_unit(batch)) for name, batch in images.items()}
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, count, count) for _ in range(bootstrap)]
    every = np.arange(count)
    limits = {m: margins.relative * point[m] for m in tables.GENERATION_DISTANCES}
    limits["diversity"] = margins.relative * _diversity(matrices[chain], every)
    rows = []
    for sampler in samplers:
        name = names[sampler]
        differences = [_diversity(matrices[name], d) - _diversity(matrices[chain], d) for d in draws]
        low, high = np.quantile(differences, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
        mean = _diversity(matrices[name], every) - _diversity(matrices[chain], every)
        diversity = statistics.Comparison(name, chain, "diversity", statistics.Estimate(
            mean, float(low), float(high), float(np.std(differences, ddof=1)), count, count), higher_is_better=False)
        comparisons = [c for c in distances if c.a == name] + [diversity]
        rows.append(_equivalence_row(sampler, runs[sampler][1], comparisons, limits))
    return rows


def fewest_steps(rows: list[dict]) -> str:
    """The equivalent sampler with the fewest network evaluations (the chain itself if none).

    Only samplers with fewer evaluations than the chain count; on a tie, DPM-Solver++ (ODE or
    SDE form) is preferred: it is second order, DDIM and ancestral DDPM are first order.
    """
    passing = [row for row in rows[1:] if row["equivalent"] == "yes" and row["NFE"] < rows[0]["NFE"]]
    if not passing:
        return f"{rows[0]['sampler']} (no faster sampler equivalent)"
    return min(passing, key=lambda row: (row["NFE"], not row["sampler"].startswith("dpmpp")))["sampler"]


def compare_stage(args: argparse.Namespace, name: str, device: torch.device, margins: Margins) -> tuple[str, str]:
    """One stage's comparison: (section title, Markdown body with the machine, the sizes, the table)."""
    stage = load_stage(args.checkpoints / f"{name}_{args.variant}", device)
    bf16 = device.type == "cuda" and args.precision == "config" and stage.config.train.mixed_precision
    cfg = stage.config
    tuning = preset(cfg.preset).study.tuning_exams if args.tuning_exams is None else args.tuning_exams
    samplers = [full_chain(stage), *candidates(stage, args.samplers)]
    if cfg.is_super_resolution:
        rows = compare_super_resolution(stage, args.data, args.sr_images, tuning, samplers, args.batch_size, bf16,
                                        margins)
        what = (f"{args.sr_images or 'all'} slices of the {tuning} tuning exams super-resolved; per-slice PSNR, SSIM "
                f"and spectrum error paired with the chain's, by exam")
    else:
        count = args.base_images if name == "base64" else args.single_images
        rows = compare_generation(stage, args.data, count, tuning, samplers, args.batch_size, bf16, margins)
        what = (f"{count} samples (seeds 0-{count - 1}) against the slices of the {tuning} tuning exams; distances "
                "and diversity paired by seed with the chain's")
    device_kind = "CPU" if device.type == "cpu" else f"GPU, {'bf16 autocast' if bf16 else 'fp32'}"
    title = f"Samplers: {cfg.name}, {cfg.preset} checkpoints, {device_kind}"
    body = "\n\n".join([
        machine_lines(machine_info(device), command_line("benchmarks.bench_samplers", args.argv)),
        f"Checkpoint {stage.path} (step {stage.step}, T = {cfg.diffusion.timesteps}); {what}. Equivalent: the 90% "
        f"interval of every difference within the margin (PSNR {margins.psnr_db} dB, SSIM {margins.ssim}, "
        f"others {margins.relative:.0%} of the chain's value).",
        f"**Fewest network evaluations equivalent to the chain: {fewest_steps(rows)}.**",
        markdown_table(rows),
        load_line(),
    ])
    return title, body


def run(args: argparse.Namespace) -> str:
    """Every stage in turn; each stage's section is written to RESULTS.md as soon as it is done."""
    device = torch.device(args.device)
    margins = Margins(args.psnr_margin, args.ssim_margin, args.relative_margin)
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
                        help="slice cache written by preprocess; its tuning exams are used (default: run_all.sh's)")
    parser.add_argument("--checkpoints", type=Path, default=Path("savepoints/demo"),
                        help="folder of run folders named <stage>_<variant>, each holding final.pt")
    parser.add_argument("--variant", choices=("swin", "noswin"), default="swin")
    parser.add_argument("--stages", nargs="+", choices=tuple(STAGES), default=list(STAGES))
    parser.add_argument("--samplers", nargs="+", help="SAMPLER:STEPS candidates (default: the process's usual ones)")
    parser.add_argument("--tuning-exams", type=int, help="valid exams set aside for tuning (default: the preset's)")
    parser.add_argument("--sr-images", type=int, help="slices of the tuning exams per SR stage (default: all)")
    parser.add_argument("--base-images", type=int, default=32, help="samples from base64")
    parser.add_argument("--single-images", type=int, default=16, help="samples from single256")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("config", "fp32"), default="config",
                        help="config: bf16 autocast on CUDA when the preset asks (as sample_stage does); fp32: strict fp32")
    parser.add_argument("--psnr-margin", type=float, default=Margins.psnr_db)
    parser.add_argument("--ssim-margin", type=float, default=Margins.ssim)
    parser.add_argument("--relative-margin", type=float, default=Margins.relative)
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
