"""Which fast sampler, or distilled generator, is equivalent to a stage's full chain, chosen on tuning exams only.

    python -m benchmarks.bench_samplers                    # run_all.sh's demo checkpoints and slice cache
    python -m benchmarks.bench_samplers --stages base64 --base-images 512 \\
        --runs base64=savepoints/demo/base64_swin_distilled   # run it again after a stop: it goes on

For every stage the reference is its process's full chain: ancestral DDPM over all T steps
(Ho et al. 2020) for a ddpm stage, ResShift's T-step chain for a resshift stage. Against it,
from the same seeds: for ddpm stages DDIM (Song et al. 2021), DPM-Solver++(2M) and its SDE form
(Lu et al. 2022) and ancestral DDPM respaced (Nichol & Dhariwal 2021); for resshift stages the
chain respaced to fewer steps; and any other run of the stage named with --runs (such as a
distilled generator, diffusion/processes/distilled.py) with its own default sampler.

Nothing here is measured on a reported slice: the real slices come only from the valid exams
the preset sets aside for tuning (`StudySettings.tuning_exams`; study.data.held_out with
exams="tune"), which the study's tables leave out, and the sample sizes are fixed by the
arguments before the run.

A path counts as equivalent to the chain only when the 90% interval of its paired difference
from the chain lies inside the margin on every measure (two one-sided tests at the 5% level,
Schuirmann 1987), not when its point estimate does. The margins are declared once: `MARGINS`, whose
PSNR and SSIM margins are the study's (evaluation.endpoints.MARGINS); a run may set others with
--psnr-margin, --ssim-margin, --relative-margin, and its section states the ones it used:
- super-resolution stages: per slice, PSNR, SSIM and the spectrum error against the real slice
  (relative: a share of the chain's), paired by slice and bootstrapped by exam;
- generating stages: the intensity-histogram and power-spectrum distances to the real tuning
  slices and the diversity (mean pairwise MS-SSIM), each within a share of the chain's value,
  paired by seed and bootstrapped over seeds (and real exams).
The default for a stage is the equivalent path with the fewest network evaluations.

Resumable: every arm (a run and its sampler) saves its samples as it draws them, one file per
batch of seeds, under OUT/<run>/<arm>/ (--out; default <checkpoints>/equivalence), beside a
record of what drew them (the checkpoint's digest, the sampler, the device and precision; a
rerun with other ones is refused). A rerun draws only the seeds not yet saved and rebuilds the
table from all of them, so a stop loses at most the batch being drawn. Network evaluations are
counted (`common.CountingModel`), not read off the step count. Each session's machine, command,
start and end are appended to OUT/<run>/sessions.jsonl and listed in the section.

Prints a Markdown table per stage and writes it to its own section of benchmarks/RESULTS.md as
soon as the stage is done (`--no-write` to skip), and its rows to
equivalence_<preset>_<run>.csv beside it: the verdicts bench_efficiency's quality-checked
cascade is built from.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import (
    RESULTS,
    CountingModel,
    command_line,
    load_line,
    machine_info,
    machine_lines,
    markdown_table,
    parse_sampler,
    strict_fp32,
)
from benchmarks.sections import update_section
from mrnet_utils.config import StageConfig
from mrnet_utils.data.slices import to_unit
from mrnet_utils.diffusion.processes import SamplerChoice, process_class
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import metrics, statistics, tables
from mrnet_utils.evaluation.endpoints import MARGINS as STUDY_MARGINS
from mrnet_utils.files import write_atomically
from mrnet_utils.pipeline import TrainedStage, sample_stage
from mrnet_utils.presets import default_sampler, preset
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
    """Differences from the chain that do not count: what "equivalent" means here."""

    psnr_db: float  # super-resolution stages, per slice
    ssim: float
    relative: float  # spectrum error, distances to the real slices, diversity: a share of the chain's value


# PSNR and SSIM: the study's own margins (evaluation.endpoints.MARGINS), declared there once; the share of the
# chain's value is this benchmark's, declared here. Fixed before the runs.
MARGINS = Margins(psnr_db=STUDY_MARGINS["psnr"].value, ssim=STUDY_MARGINS["ssim"].value, relative=0.10)


@dataclass(frozen=True)
class Arm:
    """One way of sampling the stage: a trained run and a sampler. The first arm of a stage is its chain."""

    stage: TrainedStage
    sampler: SamplerChoice
    other_run: bool = False  # a run other than the stage's own checkpoint (--runs)

    @property
    def label(self) -> str:
        sampler = f"{self.sampler[0]} {self.sampler[1]}"
        return f"{self.stage.config.name}: {sampler}" if self.other_run else sampler

    @property
    def folder(self) -> str:
        return f"{self.stage.config.name}_{self.sampler[0]}_{self.sampler[1]}"


def full_chain(stage: TrainedStage) -> SamplerChoice:
    """The reference: the stage's process's own chain over all T steps."""
    return process_class(stage.config.diffusion.process).default_sampler(stage.config.diffusion)


def candidates(stage: TrainedStage, texts: list[str] | None) -> list[SamplerChoice]:
    """The samplers to try: `texts` (SAMPLER:STEPS), else `CANDIDATES`, else every shorter run of the process's own."""
    cfg = stage.config.diffusion
    takes = process_class(cfg.process).samplers
    if texts is None:
        texts = [text for text in CANDIDATES if text.partition(":")[0] in takes]
        texts = texts or [f"{name}:{steps}" for name in takes for steps in range(1, cfg.timesteps)]
    chosen = [parse_sampler(text, cfg.timesteps) for text in texts]
    return [s for s in chosen if s[0] in takes and s[1] <= cfg.timesteps and s != full_chain(stage)]


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class SavedArm:
    """The samples of one arm saved so far under `folder`, one file per batch of seeds (see the module docstring)."""

    def __init__(self, folder: Path, record: dict) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        record_file = folder / "arm.json"
        if record_file.exists():
            stored = json.loads(record_file.read_text(encoding="utf-8"))
            if stored != record:
                changed = ", ".join(f"{key} {stored.get(key)!r} -> {value!r}" for key, value in record.items()
                                    if stored.get(key) != value)
                raise MRNetError(f"{folder} holds samples drawn otherwise ({changed}); give another --out or remove "
                                 "that folder to draw them again", parameter="out")
        else:
            write_atomically(record_file, lambda handle: handle.write(json.dumps(record, indent=2).encode()),
                             "arm record")

    def batches(self) -> list[dict[str, np.ndarray]]:
        batches = []
        for path in sorted(self.folder.glob("seeds_*.npz")):
            with np.load(path) as batch:
                batches.append({key: batch[key] for key in batch.files})
        return batches

    def missing(self, seeds: list[int]) -> list[int]:
        saved = {int(seed) for batch in self.batches() for seed in batch["seeds"]}
        return [seed for seed in seeds if seed not in saved]

    def save(self, seeds: list[int], images: torch.Tensor, seconds: float, evaluations: int, session: str) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, seeds=np.asarray(seeds), images=images.numpy(), seconds=seconds, evaluations=evaluations,
                 session=session, saved=_now())
        write_atomically(self.folder / f"seeds_{seeds[0]:06d}_{seeds[-1]:06d}.npz",
                         lambda handle: handle.write(buffer.getbuffer()), "sample batch")

    def load(self, seeds: list[int]) -> tuple[torch.Tensor, float, float]:
        """The images of `seeds` in their order, and seconds and network evaluations per image over every batch
        that holds one of them."""
        found, seconds, evaluations, count, wanted = {}, 0.0, 0, 0, set(seeds)
        for batch in self.batches():
            if wanted.intersection(batch["seeds"].tolist()):
                seconds, evaluations, count = seconds + float(batch["seconds"]), evaluations + int(batch["evaluations"]), \
                    count + len(batch["seeds"])
                found.update({int(seed): image for seed, image in zip(batch["seeds"], batch["images"])})
        absent = [seed for seed in seeds if seed not in found]
        if absent:
            raise MRNetError(f"{self.folder} lacks seeds {absent[:5]}{' ...' if len(absent) > 5 else ''}")
        images = torch.from_numpy(np.stack([found[seed] for seed in seeds]))
        return images, seconds / count, evaluations / count


def draw(arms: list[Arm], saved: list[SavedArm], seeds: list[int], low_res: torch.Tensor | None, batch_size: int,
         bf16: bool, session: str) -> None:
    """Draw and save the samples of `seeds` that each arm lacks, batch of seeds by batch of seeds, every arm in
    turn within a batch (so that a run stopped early leaves the first seeds of every arm), each batch marked
    with the `session` that drew it. `low_res` holds one input per seed (seed i: row i), for super-resolution
    stages."""
    todo = {arm.label: set(store.missing(seeds)) for arm, store in zip(arms, saved)}
    counted = {arm.label: CountingModel(arm.stage.model) for arm in arms}
    for start in range(0, len(seeds), batch_size):
        for arm, store in zip(arms, saved):
            chunk = [seed for seed in seeds[start : start + batch_size] if seed in todo[arm.label]]
            if not chunk:
                continue
            model, before, started = counted[arm.label], counted[arm.label].images, time.perf_counter()
            images = sample_stage(model, arm.stage.config, chunk, None if low_res is None else low_res[chunk],
                                  arm.sampler, batch_size, bf16, progress=False)
            store.save(chunk, images, time.perf_counter() - started, model.images - before, session)


def _equivalence_row(arm: Arm, seconds: float, nfe: float, comparisons: list[statistics.Comparison],
                     margins: dict[str, float], chain: dict[str, float]) -> dict:
    """The arm's row; `chain` holds the chain's value of each measure whose margin is a share of it."""
    row = {"path": arm.label, "process": arm.stage.config.diffusion.process, "sampler": arm.sampler[0],
           "steps": arm.sampler[1], "NFE": nfe, "s / image": seconds}
    for comparison in comparisons:
        d = comparison.difference
        row[f"d{comparison.metric} [90% CI]"] = f"{d.mean:+.4g} [{d.low:+.4g}, {d.high:+.4g}]"
    row["equivalent"] = "yes" if all(statistics.equivalent(c, margins[c.metric]) for c in comparisons) else "no"
    row["equivalent within"] = "; ".join(_tightest_margin(c, chain.get(c.metric)) for c in comparisons)
    return row


def _tightest_margin(comparison: statistics.Comparison, chain: float | None) -> str:
    """The smallest margin this comparison passes: the interval's farthest end from zero, as a share of the
    chain's value where the margin is one (`chain`, when not zero), else in the measure's units."""
    d = comparison.difference
    if not d.has_interval:
        return f"{comparison.metric} -"
    bound = max(abs(d.low), abs(d.high))
    return f"{comparison.metric} {bound / chain:.0%}" if chain else f"{comparison.metric} {bound:.3g}"


def compare_super_resolution(arms: list[Arm], measured: dict[str, tuple], truth: torch.Tensor, exam_ids,
                             margins: Margins) -> list[dict]:
    """Per arm: per-slice PSNR, SSIM and spectrum error paired with the chain's, bootstrapped by exam."""
    values = {}
    for arm in arms:
        images = to_unit(measured[arm.folder][0])
        values[arm.folder] = {"psnr": metrics.psnr(images, truth).numpy(), "ssim": metrics.ssim(images, truth).numpy(),
                              "spectrum_error": metrics.spectrum_error(images, truth).numpy()}
    reference = values[arms[0].folder]
    limits = {"psnr": margins.psnr_db, "ssim": margins.ssim,
              "spectrum_error": margins.relative * float(reference["spectrum_error"].mean())}
    rows = []
    for arm in arms:
        comparisons = [
            statistics.paired_comparison(arm.label, "chain", metric, values[arm.folder][metric], reference[metric],
                                         exam_ids, higher_is_better=metric != "spectrum_error", confidence=CONFIDENCE)
            for metric in limits
        ]
        rows.append(_equivalence_row(arm, *measured[arm.folder][1:], comparisons, limits,
                                     {"spectrum_error": float(reference["spectrum_error"].mean())}))
    return rows


def _diversity_pairs(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of distinct images (P, 2) and its MS-SSIM (P,)."""
    count = len(images)
    return metrics.pairwise_ms_ssim(images, max_pairs=count * (count - 1) // 2, batch_size=256)


def _diversity(pairs: np.ndarray, values: np.ndarray, counts: np.ndarray, rows: int = 32) -> np.ndarray:
    """Mean MS-SSIM over pairs, each weighed by how often a resample (a row of `counts`, draws x seeds) drew both
    of its images, so that a seed drawn twice is never paired with itself (NaN for a resample of one seed
    only); `rows` resamples at a time."""
    means = []
    for part in np.split(counts, range(rows, len(counts), rows)):
        weights = part[:, pairs[:, 0]] * part[:, pairs[:, 1]]
        total = weights.sum(axis=1)
        means.append(np.divide(weights @ values, total, out=np.full(len(total), np.nan), where=total > 0))
    return np.concatenate(means)


def compare_generation(arms: list[Arm], measured: dict[str, tuple], real: torch.Tensor, real_exams,
                       margins: Margins, bootstrap: int = 500) -> list[dict]:
    """Per arm: distances to the real tuning slices and diversity, paired by seed with the chain's."""
    chain = arms[0].label
    images = {arm.label: measured[arm.folder][0] for arm in arms}
    count = len(images[chain])
    distances = tables.generation_comparisons(images, real, real_exams, [(arm.label, chain) for arm in arms],
                                              confidence=CONFIDENCE)
    point = {m: tables.generation_distance(m, to_unit(images[chain]), to_unit(real)) for m in tables.GENERATION_DISTANCES}
    rng = np.random.default_rng(0)
    counts = np.stack([np.ones(count)] + [np.bincount(rng.integers(0, count, count), minlength=count)
                                          for _ in range(bootstrap)]).astype(float)  # row 0: every seed once
    diversity = {label: _diversity(*_diversity_pairs(to_unit(batch)), counts) for label, batch in images.items()}
    limits = {m: margins.relative * point[m] for m in tables.GENERATION_DISTANCES}
    limits["diversity"] = margins.relative * diversity[chain][0]
    rows = []
    for arm in arms:
        differences = diversity[arm.label] - diversity[chain]
        low, high = np.nanquantile(differences[1:], [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]) \
            if count >= statistics.MIN_EXAMS else (np.nan, np.nan)
        estimate = statistics.Estimate(float(differences[0]), float(low), float(high),
                                       float(np.nanstd(differences[1:], ddof=1)), count, count)
        comparisons = [c for c in distances if c.a == arm.label]
        comparisons.append(statistics.Comparison(arm.label, chain, "diversity", estimate, higher_is_better=False))
        rows.append(_equivalence_row(arm, *measured[arm.folder][1:], comparisons, limits,
                                     {**point, "diversity": diversity[chain][0]}))
    return rows


def fastest_equivalent(rows: list[dict]) -> dict:
    """The row of the equivalent path with the fewest network evaluations; the chain's (the first row) if none.

    Only paths with fewer evaluations than the chain count; on a tie, DPM-Solver++ (ODE or
    SDE form) is preferred: it is second order, DDIM and ancestral DDPM are first order.
    """
    passing = [row for row in rows[1:] if row["equivalent"] == "yes" and row["NFE"] < rows[0]["NFE"]]
    if not passing:
        return rows[0]
    return min(passing, key=lambda row: (row["NFE"], not row["sampler"].startswith("dpmpp")))


def fewest_steps(rows: list[dict]) -> str:
    """`fastest_equivalent` in words."""
    row = fastest_equivalent(rows)
    return f"{row['path']} (no faster path equivalent)" if row is rows[0] else row["path"]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _session_lines(sessions: list[dict], arms: list[Arm], saved: list[SavedArm]) -> str:
    """One line per session: when it started and saved its last batch, the machine, the command, what it drew."""
    drawn: dict[str, dict[str, int]] = {}
    last: dict[str, str] = {}
    for arm, store in zip(arms, saved):
        for batch in store.batches():
            session = str(batch["session"])
            drawn.setdefault(session, {}).setdefault(arm.label, 0)
            drawn[session][arm.label] += len(batch["seeds"])
            last[session] = max(last.get(session, ""), str(batch["saved"]))
    lines = []
    for session in sessions:
        started, info = session["started"], session["machine"]
        counts = "; ".join(f"{arm}: {count}" for arm, count in drawn.get(started, {}).items()) or "nothing"
        lines.append(f"- {started}, last batch {last.get(started, 'none')}: {info['cpu']}, {info['torch threads']} "
                     f"torch thread(s), {info['device']}, load {info['load average at start']} at start; "
                     f"`{session['command']}`; drew {counts}")
    return "\n".join(lines)


def compare_stage(
    args: argparse.Namespace, name: str, device: torch.device, margins: Margins
) -> tuple[StageConfig, str, str, list[dict]]:
    """One stage's comparison: its config, the section title, the Markdown body with the machine, the sizes and
    the table, and the table's rows."""
    stage = load_stage(args.checkpoints / f"{name}_{args.variant}", device)
    bf16 = device.type == "cuda" and args.precision == "config" and stage.config.train.mixed_precision
    cfg = stage.config
    tuning = preset(cfg.preset).study.tuning_exams if args.tuning_exams is None else args.tuning_exams
    arms = [Arm(stage, sampler) for sampler in [full_chain(stage), *candidates(stage, args.samplers)]]
    for other_stage, run in args.runs:
        if other_stage == name:
            other = load_stage(run, device)
            if other.config.stage != name:
                raise MRNetError(f"--runs {name}={run}: that run is of stage {other.config.stage}", parameter="runs")
            arms.append(Arm(other, default_sampler(other.config), other_run=True))
    if cfg.is_super_resolution:
        held = held_out(args.data, args.sr_images, exams="tune", tuning=tuning)
        low_res, truth, seeds = held.at(cfg.low_resolution), to_unit(held.at(cfg.resolution)), list(range(len(held.exam_ids)))
        what = (f"{args.sr_images or 'all'} slices of the {tuning} tuning exams super-resolved; per-slice PSNR, SSIM "
                f"and spectrum error paired with the chain's, by exam")
    else:
        real = held_out(args.data, None, exams="tune", tuning=tuning)
        count = args.base_images if name == "base64" else args.single_images
        low_res, seeds = None, list(range(count))
        what = (f"{count} samples (seeds 0-{count - 1}) against the slices of the {tuning} tuning exams; distances "
                "and diversity paired by seed with the chain's")
    folder = args.out / cfg.name
    saved = [SavedArm(folder / arm.folder, {
        "checkpoint": str(arm.stage.path), "sha256": _digest(arm.stage.path), "sampler": list(arm.sampler),
        "device": device.type, "bf16": bf16, "precision": args.precision}) for arm in arms]
    info, command = machine_info(device), command_line("benchmarks.bench_samplers", args.argv)
    session = {"started": _now(), "machine": info, "command": command}
    sessions_file = folder / "sessions.jsonl"
    with open(sessions_file, "a", encoding="utf-8") as handle:  # before drawing: a session stopped midway keeps its record
        handle.write(json.dumps(session) + "\n")
    draw(arms, saved, seeds, low_res, args.batch_size, bf16, session["started"])
    measured = {arm.folder: store.load(seeds) for arm, store in zip(arms, saved)}
    sessions = [json.loads(line) for line in sessions_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if cfg.is_super_resolution:
        rows = compare_super_resolution(arms, measured, truth, held.exam_ids, margins)
    else:
        rows = compare_generation(arms, measured, real.at(cfg.resolution), real.exam_ids, margins)
    device_kind = "CPU" if device.type == "cpu" else f"GPU, {'bf16 autocast' if bf16 else 'fp32'}"
    title = f"Samplers: {cfg.name}, {cfg.preset} checkpoints, {device_kind}"
    shown = [{key: value for key, value in row.items() if key not in ("process", "sampler", "steps")} for row in rows]
    body = "\n\n".join([
        machine_lines(info, command),
        f"Samples drawn in {len(sessions)} session(s), saved under {folder} (a rerun draws only what is missing):\n"
        + _session_lines(sessions, arms, saved),
        f"Checkpoint {stage.path} (step {stage.step}, T = {cfg.diffusion.timesteps}); {what}. NFE: network "
        f"evaluations per image, counted; s / image over the sessions that drew them (the machine's load varied). "
        f"Equivalent: the 90% interval of every difference within the margin ({_margin_words(margins)}); "
        "equivalent within: the smallest margin each interval lies inside (as a share of the chain's value where "
        "the margin is one), i.e. what these samples can resolve.",
        f"**Fewest network evaluations equivalent to the chain: {fewest_steps(rows)}.**",
        markdown_table(shown),
        load_line(),
    ])
    return cfg, title, body, rows


def _margin_words(margins: Margins) -> str:
    return f"PSNR {margins.psnr_db} dB, SSIM {margins.ssim}, others {margins.relative:.0%} of the chain's value"


def verdict_file(results: Path, preset_name: str, run: str) -> Path:
    """Where a stage's rows are written beside RESULTS.md, for bench_efficiency."""
    return results.with_name(f"equivalence_{preset_name}_{run}.csv")


def run(args: argparse.Namespace) -> str:
    """Every stage in turn; each stage's section is written to RESULTS.md as soon as it is done."""
    device = torch.device(args.device)
    margins = Margins(args.psnr_margin, args.ssim_margin, args.relative_margin)
    report = []
    for name in args.stages:
        with strict_fp32() if args.precision == "fp32" else nullcontext():
            cfg, title, body, rows = compare_stage(args, name, device, margins)
        print(f"## {title}\n\n{body}\n", flush=True)
        if not args.no_write:
            update_section(args.results, title, body)
            frame = pd.DataFrame(rows).assign(stage=name, margins=json.dumps(asdict(margins)))
            frame.to_csv(verdict_file(args.results, cfg.preset, cfg.name), index=False)
        report.append(f"## {title}\n\n{body}")
    return "\n\n".join(report)


def _stage_run(text: str) -> tuple[str, Path]:
    stage, _, path = text.partition("=")
    if stage not in STAGES or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not STAGE=RUN with STAGE one of {', '.join(STAGES)}")
    return stage, Path(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_samplers", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo/slices_coronal.npz"),
                        help="slice cache written by preprocess; its tuning exams are used (default: run_all.sh's)")
    parser.add_argument("--checkpoints", type=Path, default=Path("savepoints/demo"),
                        help="folder of run folders named <stage>_<variant>, each holding final.pt")
    parser.add_argument("--variant", choices=("swin", "noswin"), default="swin")
    parser.add_argument("--stages", nargs="+", choices=tuple(STAGES), default=list(STAGES))
    parser.add_argument("--samplers", nargs="+", help="SAMPLER:STEPS candidates (default: the process's usual ones)")
    parser.add_argument("--runs", nargs="+", type=_stage_run, default=[], metavar="STAGE=RUN",
                        help="other runs of a stage compared with its chain, each with its default sampler, e.g. "
                             "base64=savepoints/demo/base64_swin_distilled")
    parser.add_argument("--tuning-exams", type=int, help="valid exams set aside for tuning (default: the preset's)")
    parser.add_argument("--sr-images", type=int, help="slices of the tuning exams per SR stage (default: all)")
    parser.add_argument("--base-images", type=int, default=32, help="samples from base64")
    parser.add_argument("--single-images", type=int, default=16, help="samples from single256")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, help="folder of the saved samples (default: <checkpoints>/equivalence)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("config", "fp32"), default="config",
                        help="config: bf16 autocast on CUDA when the preset asks (as sample_stage does); fp32: strict fp32")
    parser.add_argument("--psnr-margin", type=float, default=MARGINS.psnr_db)
    parser.add_argument("--ssim-margin", type=float, default=MARGINS.ssim)
    parser.add_argument("--relative-margin", type=float, default=MARGINS.relative)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.argv = argv
    args.out = args.out or args.checkpoints / "equivalence"
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run(args)


if __name__ == "__main__":
    main()
