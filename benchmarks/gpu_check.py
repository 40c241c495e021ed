"""The GPU check: bf16 against fp32, host syncs while sampling, and the full networks' training and sampling speed.

    bash benchmarks/gpu_check.sh       # writes gpu_check.md / .json to $OUT (default runs/gpu_check)

Phases, in order, each timed against one budget (a phase that fails is reported and the
next one runs; the report is rewritten after every phase, so a killed run keeps what it had):
1. the device;
2. bf16 autocast against fp32 on every stage's network: relative error of one network
   evaluation (one denoising step's prediction) and of a short DPM-Solver++ run from the
   same noise, beside how far the fp32 run moves when each evaluation gets a random error
   of the same size (the run's own sensitivity; see `Perturbed`);
3. host synchronisations inside the sampling loop, for each sampler
   (torch.cuda.set_sync_debug_mode("error"): any sync raises);
4. channels_last against the default memory format: ms per forward pass (sampling) and
   per training step, for every stage;
5. training images/s for every `full` stage (the real training loop, on a few synthetic
   phantom exams) and what the preset's steps would take at that rate;
6. cascade and single-stage sampling with the `gpu` preset's quick samplers (presets.default_sampler
   with `quick`: what its study samples with; `--samplers STAGE=SAMPLER:STEPS` to try others) on
   the full networks against the
   reference's ancestral path (T = 2000 / 1000 / 1000, batch 1; per-step cost measured over
   `--reference-steps` steps per stage and scaled, as the table says);
7. with --compile: training images/s of base64 under torch.compile.
Network cost does not depend on the weights: the networks are untrained, built from the preset.

Without CUDA the same phases run on the CPU with the smoke preset and tiny settings, and the
report says so in its first line: that path exists so that the script is tested; its
numbers say nothing about a GPU.

`python -m benchmarks.gpu_check --record OUT/gpu_check.md` copies a report into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from benchmarks.bench_efficiency import (
    PIPELINES,
    seeded_network,
    forward_ms,
    network_inputs,
    reference_seconds_per_image,
    reference_steps,
    sample_pipeline,
    synthetic_cache,
    training_rate,
)
from benchmarks.common import (
    RESULTS,
    command_line,
    device_name,
    load_line,
    machine_info,
    machine_lines,
    markdown_table,
    stage_sampler,
    strict_fp32,
    timer,
)
from benchmarks.sections import update_section
from mrnet_utils.config import StageConfig
from mrnet_utils.diffusion.processes import DDPM, build_process, process_class
from mrnet_utils.diffusion.samplers import generators_from_seeds, noise_from_seeds
from mrnet_utils.presets import default_sampler, stage_config
from mrnet_utils.pipeline import bf16_autocast
from mrnet_utils.stages import STAGES

# bf16 keeps 8 bits of mantissa (relative rounding 2**-9 = 0.2% per operation); through some
# fifty layers of a UNet about 1-2% is usual (1.3-1.7% on the full (then "paper") networks on an H200,
# 1.4% on the smoke network on a CPU). Beyond STEP_TOLERANCE something runs in bf16 that
# should not. A sampling run passes below RUN_TOLERANCE, or below twice the error that a
# random perturbation of the one-step size causes in the same run.
STEP_TOLERANCE = 0.03
RUN_TOLERANCE = 0.05


@dataclass(frozen=True)
class Settings:
    preset: str
    train_window: int  # training steps timed, after as many warm-up steps
    train_stages: tuple[str, ...]
    images: int  # sampled per pipeline
    batch_sizes: tuple[int, ...]
    reference_steps: int  # ancestral steps timed per stage for the reference path
    samplers: dict[str, tuple[str, int]]  # (sampler, steps) per stage for the sampling phase
    check_stages: tuple[str, ...]  # stages of the bf16 check
    check_steps: int  # sampler steps of the bf16 and host-sync checks
    check_batch: int
    repeats: int  # timed forward passes per memory format


def _short_chain(cfg: StageConfig, steps: int) -> tuple[str, int]:
    """A short sampling run of the stage's process: DPM-Solver++ in `steps` steps where the process takes it,
    else the process's own chain."""
    process = process_class(cfg.diffusion.process)
    return ("dpmpp", steps) if "dpmpp" in process.samplers else process.default_sampler(cfg.diffusion)


GPU = Settings(
    "full", 10, tuple(STAGES), 16, (8, 32), 100,
    {name: default_sampler(stage_config(name, "gpu"), quick=True) for name in STAGES},  # the full networks' too
    tuple(STAGES), 10, 4, 10,
)
# bf16 on a CPU without bf16 instructions is emulated and slow: one stage is enough to test the path.
CPU_FALLBACK = Settings(
    "smoke", 1, ("base64",), 2, (2,), 2,
    {name: _short_chain(stage_config(name, "smoke"), 3) for name in STAGES},
    ("base64",), 3, 2, 1,
)


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """||other - reference|| / ||reference||, in float64."""
    reference, other = reference.double(), other.double()
    return float((other - reference).norm() / reference.norm().clamp_min(1e-30))


def _extra_args(cfg: StageConfig, batch: int, device: torch.device) -> dict:
    _, _, extra = network_inputs(cfg, batch, device)
    return extra


@torch.inference_mode()
def check_bf16(configs: dict[str, StageConfig], device: torch.device, settings: Settings) -> list[dict]:
    rows = []
    for name in settings.check_stages:
        cfg = configs[name]
        model = seeded_network(cfg, device)
        torch.manual_seed(1)
        x, t, extra = network_inputs(cfg, settings.check_batch, device)
        bf16 = torch.autocast(device.type, dtype=torch.bfloat16)
        with strict_fp32():
            step_fp32 = model(x, t, **extra)
        with bf16:
            step_bf16 = model(x, t, **extra)
        noise = noise_from_seeds(list(range(settings.check_batch)), (1, cfg.resolution, cfg.resolution), device)
        sampler, steps = _short_chain(cfg, settings.check_steps)
        step_error = relative_error(step_fp32, step_bf16)
        with strict_fp32():
            run_fp32 = _run(model, cfg, noise, extra, settings.check_steps)
            perturbed = Perturbed(model, step_error, seed=2)
            run_perturbed = _run(perturbed, cfg, noise, extra, settings.check_steps)
        with bf16:
            run_bf16 = _run(model, cfg, noise, extra, settings.check_steps)
        run_error, sensitivity = relative_error(run_fp32, run_bf16), relative_error(run_fp32, run_perturbed)
        within = step_error < STEP_TOLERANCE and run_error < max(RUN_TOLERANCE, 2 * sensitivity)
        rows.append({
            "stage": cfg.name,
            "one step: rel. error": step_error,
            f"{sampler} {steps} steps: rel. error": run_error,
            "same run, fp32 + random error of the one step's size: rel. error": sensitivity,
            f"{sampler} {steps} steps: max abs. difference": float((run_fp32 - run_bf16.float()).abs().max()),
            "within tolerance": "yes" if within else "NO",
        })
    return rows


def _run(model, cfg: StageConfig, noise: torch.Tensor, extra: dict, steps: int, generators=None) -> torch.Tensor:
    """`_short_chain` from `noise`; a process that starts from the input shifts from the upsampled condition."""
    process = build_process(cfg.diffusion, noise.device)
    return process.sample(model, _short_chain(cfg, steps), noise, extra, generators, y0=extra.get("cond"))


class Perturbed(torch.nn.Module):
    """A network whose output carries seeded Gaussian noise of `relative` times its RMS.

    How far a sampling run moves when every network evaluation is off by that much says how
    sensitive the run is, whatever the cause; bf16 is at fault only if it moves the run much
    further. (An untrained network's samples are mostly saturated at +-1, and one flipped
    pixel is a difference of 2: the unconditional stages are far more sensitive than the
    super-resolution ones, which the condition anchors.)
    """

    def __init__(self, model: torch.nn.Module, relative: float, seed: int) -> None:
        super().__init__()
        self.model, self.relative, self.seed = model, relative, seed
        self.calls = 0

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.model(x, *args, **kwargs)
        self.calls += 1
        generator = torch.Generator(out.device).manual_seed(self.seed * 100_003 + self.calls)
        noise = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        return out + self.relative * out.pow(2).mean().sqrt() * noise


def check_host_syncs(configs: dict[str, StageConfig], device: torch.device, settings: Settings) -> list[dict]:
    """Run each sampler with torch.cuda.set_sync_debug_mode('error'): a host sync inside the loop raises."""
    if device.type != "cuda":
        return [{"sampler": "all", "host syncs in the loop": "not checked: needs CUDA"}]
    # A super-resolution stage: the condition and the Swin bottleneck are exercised too; the DDPM samplers
    # run on it as if it were a ddpm stage (the network is the same), its own ResShift chain as it is.
    sr1 = configs["sr1"]
    as_ddpm = sr1.replace(diffusion={"process": "ddpm", "timesteps": 1000, "prediction": "epsilon"})
    model = seeded_network(sr1, device)
    seeds = list(range(settings.check_batch))
    noise = noise_from_seeds(seeds, (1, sr1.resolution, sr1.resolution), device)
    extra = _extra_args(sr1, len(seeds), device)
    runs = {name: (as_ddpm, (name, settings.check_steps)) for name in DDPM.samplers}
    own = default_sampler(sr1)
    runs.setdefault(own[0], (sr1, own))  # the stage's own chain, where its process is not ddpm
    rows = []
    for name, (cfg, sampler) in runs.items():
        process = build_process(cfg.diffusion, "cpu")  # betas stay on the CPU, as the samplers read them
        generators = generators_from_seeds(seeds, device)

        def run() -> None:
            process.sample(model, sampler, noise, extra, generators, extra["cond"])

        with torch.autocast("cuda", dtype=torch.bfloat16):
            run()  # warm-up
            torch.cuda.synchronize(device)
            torch.cuda.set_sync_debug_mode("error")
            try:
                run()
                found = "none"
            except RuntimeError as error:
                found = f"FOUND: {str(error).splitlines()[0]}"
            finally:
                torch.cuda.set_sync_debug_mode("default")
        rows.append({"sampler": f"{sampler[0]} {sampler[1]} steps", "host syncs in the loop": found})
    return rows


def check_memory_format(configs: dict[str, StageConfig], device: torch.device, settings: Settings) -> list[dict]:
    """channels_last against the default layout: a sampling forward pass and a training step, per stage."""
    rows = []
    batch = settings.batch_sizes[0]
    for name in settings.check_stages:
        cfg = configs[name]
        model = seeded_network(cfg, device)
        forward, step = {}, {}
        for layout, memory_format in (("default", torch.contiguous_format), ("channels_last", torch.channels_last)):
            model = model.to(memory_format=memory_format)
            forward[layout] = forward_ms(model, cfg, device, batch, settings.repeats)
            step[layout] = training_step_ms(model, cfg, device, settings.repeats)
        rows.append({
            "stage": cfg.name,
            **{f"ms / forward, batch {batch}, {layout}": ms for layout, ms in forward.items()},
            **{f"ms / training step, batch {cfg.train.batch_size}, {layout}": ms for layout, ms in step.items()},
        })
    return rows


def training_step_ms(model: torch.nn.Module, cfg: StageConfig, device: torch.device, repeats: int) -> float:
    """Median ms of a forward and backward pass at the training batch, under the training loop's autocast."""
    x, t, extra = network_inputs(cfg, cfg.train.batch_size, device)
    autocast = bf16_autocast(device, cfg.train.mixed_precision)
    model.train()
    times = []
    for _ in range(repeats + 1):
        with timer(device) as elapsed:
            with autocast:
                loss = model(x, t, **extra).float().square().mean()
            loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(elapsed[0])
    model.eval()
    return 1000 * statistics.median(times[1:])


def measure_training(configs, device, settings: Settings, cache: Path, compile: bool = False) -> list[dict]:
    rows = []
    for name in settings.train_stages:
        cfg = configs[name]
        cost = training_rate(cfg, cache, device, settings.train_window, compile=compile)
        preset_hours = cfg.train.steps * cfg.train.batch_size / cost.images_per_second / 3600
        rows.append({
            "stage": cfg.name,
            "batch": cfg.train.batch_size,
            "mode": "torch.compile" if compile else "eager",
            "images / s": cost.images_per_second,
            f"peak memory (MiB, {cost.memory_kind})": cost.peak_mib,
            f"hours for the {cfg.preset} preset's steps": preset_hours,
        })
    return rows


def measure_sampling(configs, device, settings: Settings) -> list[dict]:
    networks = {name: (seeded_network(cfg, device), cfg) for name, cfg in configs.items()}
    rows = []
    for pipeline in PIPELINES:
        reference, extrapolated = reference_seconds_per_image(pipeline, networks, device, settings.reference_steps)
        for batch in settings.batch_sizes:
            images = max(settings.images, batch)
            samplers = {name: settings.samplers[name] for name in PIPELINES[pipeline]}
            sample_pipeline(pipeline, networks, device, batch, batch, samplers)  # warm-up
            cost = sample_pipeline(pipeline, networks, device, images, batch, samplers)
            rows.append({
                "pipeline": pipeline,
                "samplers, batch": " + ".join(f"{name} {steps}" for name, steps in samplers.values()) + f", batch {batch}",
                "NFE / image": cost.nfe_per_image,
                "s / image": cost.seconds_per_image,
                "images / s": 1 / cost.seconds_per_image,
                f"peak memory (MiB, {cost.memory_kind})": cost.peak_mib,
                "reference: DDPM, batch 1": "+".join(str(reference_steps(n)) for n in PIPELINES[pipeline]) + " steps",
                "reference s / image": reference,
                "reference timing": f"extrapolated from {settings.reference_steps} steps per stage"
                if extrapolated else "measured",
                "speed-up": reference / cost.seconds_per_image,
            })
    return rows


class Report:
    """The tables so far, rewritten to OUT after every phase."""

    def __init__(self, out: Path, header: str, title: str) -> None:
        self.out, self.header, self.title = out, header, title
        self.sections: list[str] = []
        self.results: dict[str, object] = {}
        self.failed = False
        out.mkdir(parents=True, exist_ok=True)
        self.write()  # a run killed in its first phase still leaves the header

    def add(self, name: str, rows: list[dict] | None, note: str = "") -> None:
        self.results[name] = rows if rows is not None else note
        body = markdown_table(rows) if rows else note
        self.sections.append(f"### {name}\n\n{body}")
        print(f"\n### {name}\n\n{body}", flush=True)
        self.write()

    def markdown(self) -> str:
        return f"## {self.title}\n\n{self.header}\n\n" + "\n\n".join(self.sections) + "\n"

    def write(self) -> None:
        (self.out / "gpu_check.md").write_text(self.markdown(), encoding="utf-8")
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1, default=str), encoding="utf-8")


def run(args: argparse.Namespace) -> Report:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    settings = GPU if cuda else CPU_FALLBACK
    if args.train_window:
        settings = Settings(**{**settings.__dict__, "train_window": args.train_window})
    if args.samplers:
        settings = Settings(**{**settings.__dict__, "samplers": {**settings.samplers, **dict(args.samplers)}})
    configs = {name: stage_config(name, settings.preset, use_swin=True) for name in STAGES}
    banner = (
        f"Device: {device_name(device)}; preset {settings.preset}."
        if cuda else
        "CUDA is not available: this is the CPU FALLBACK with the smoke preset and tiny settings. "
        "It checks that the script runs; its numbers say nothing about a GPU."
    )
    print(banner, flush=True)
    header = banner + "\n\n" + machine_lines(machine_info(device), command_line("benchmarks.gpu_check", args.argv))
    title = f"GPU check: {device_name(device)}" if cuda else "GPU check: CPU fallback (no CUDA)"
    if args.only:
        title += f" ({', '.join(args.only)})"
    report = Report(args.out, header, title)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as folder:
        made: dict[str, Path] = {}

        def cache() -> Path:
            """The synthetic slice cache for the training phases, written on first use."""
            if "path" not in made:
                made["path"] = args.cache or synthetic_cache(Path(folder))
            return made["path"]

        phases: list[tuple[str, Callable[[], list[dict]]]] = [
            ("bf16 autocast against fp32", lambda: check_bf16(configs, device, settings)),
            ("host syncs in the sampling loop", lambda: check_host_syncs(configs, device, settings)),
            ("memory format", lambda: check_memory_format(configs, device, settings)),
            ("training throughput", lambda: measure_training(configs, device, settings, cache())),
            ("sampling throughput", lambda: measure_sampling(configs, device, settings)),
        ]
        if args.compile:
            only_base = Settings(**{**settings.__dict__, "train_stages": ("base64",)})
            phases.append(("training under torch.compile", lambda: measure_training(
                configs, device, only_base, cache(), compile=True)))

        for name, phase in phases:
            if args.only and name not in args.only:
                continue
            elapsed = time.perf_counter() - started
            if elapsed > args.budget_s:
                report.add(name, None, f"skipped: the {args.budget_s:.0f} s budget was spent ({elapsed:.0f} s)")
                continue
            try:
                phase_started = time.perf_counter()
                rows = phase()
                report.add(name, rows)
                print(f"({name}: {time.perf_counter() - phase_started:.1f} s)", flush=True)
            except Exception as error:  # one broken phase must not cost the others on a lent GPU
                report.failed = True
                report.add(name, None, f"FAILED: {type(error).__name__}: {error}")
                with (args.out / "gpu_check_errors.txt").open("a", encoding="utf-8") as handle:
                    handle.write(f"--- {name}\n{traceback.format_exc()}\n")
    report.add("total", None, f"{time.perf_counter() - started:.1f} s. {load_line()}")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "runs/gpu_check"))
    parser.add_argument("--budget-s", type=float, default=300.0, help="phases not started by then are skipped")
    parser.add_argument("--compile", action="store_true", help="also time training under torch.compile")
    parser.add_argument("--only", nargs="+", help="run only these phases (by their titles)")
    parser.add_argument("--train-window", type=int, help="training steps timed per stage (after as many warm-up)")
    parser.add_argument(
        "--cache", type=Path, help="slice cache for the training phases (default: a small synthetic one made here)"
    )
    parser.add_argument("--samplers", nargs="+", type=stage_sampler, default=[], metavar="STAGE=SAMPLER:STEPS",
                        help="sampling phase: instead of these stages' defaults, e.g. base64=dpmpp_sde:50")
    parser.add_argument("--record", type=Path, help="copy this gpu_check.md into benchmarks/RESULTS.md and exit")
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def record(report: Path, results: Path = RESULTS) -> None:
    """Put a gpu_check.md report into RESULTS.md as its own section (replacing one with the same title)."""
    title, _, body = report.read_text(encoding="utf-8").partition("\n")
    update_section(results, title.removeprefix("## ").strip(), body)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.record:
        record(args.record)
        return 0
    return 1 if run(args).failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
