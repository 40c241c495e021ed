"""Speed and memory of the networks, the samplers and training, against the reference's sampling path.

    python -m benchmarks.bench_efficiency                  # demo preset, this machine's device
    python -m benchmarks.bench_efficiency --preset full    # on a CPU: per-forward cost only
    python -m benchmarks.bench_efficiency --samplers base64=ddpm:1000 --pipelines cascade --parts sampling

Measures, for one preset (network cost does not depend on the weights, so the networks
are built from the preset, untrained):
- the cost of one forward pass per stage: ms at batch 1 and at the sampling batch, GFLOPs
  per image (torch.utils.flop_counter), parameters;
- seconds per 256x256 image through the cascade (base 64 -> SR 128 -> SR 256) and through
  the single-stage model with each stage's default sampler and with its quick one (what the
  preset's study samples with; presets.default_sampler), batched; network evaluations (NFE) per
  image, counted by wrapping the networks; peak memory;
- the same for the quality-checked path of each pipeline: every stage at the path with the fewest
  network evaluations shown equivalent to its full chain in the committed verdicts of
  benchmarks/bench_samplers.py (equivalence_<verdicts>_<run>.csv; a faster sampler of the stage's
  network, or another process such as its distilled generator, on a network of the same shape),
  and a stage without a verdict at its full chain (paths that sample alike are one row, their
  names joined: "defaults = quality-checked"); its cost and peak memory also per batch size
  (`--batch-sizes`, one batch each). `--probe-steps K` runs a stage of more than K steps in K and
  scales its network time (the table says "extrapolated"), for large networks on a CPU;
- the reference study's path on the same networks: ancestral DDPM with T = 2000 / 1000 /
  1000 steps, one image at a time. `--reference-steps K` times K steps per stage and
  multiplies the per-step cost by the reference's step count (the table says
  "extrapolated"); `--reference-steps 0` runs the whole chain;
- training images/s per stage (the real training loop on a few synthetic phantom exams,
  the first window of steps left out as warm-up) and the time the preset's steps would take.

Prints Markdown tables and writes them, with the machine and the command, to a section
of benchmarks/RESULTS.md (`--no-write` to skip), and the sampling rows to
efficiency_<preset>_<variant>_<device>[_<stage>-<sampler><steps>...].csv beside it; a run
with `--samplers` has its own section and file, so it never replaces the defaults' figures.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    RESULTS,
    CountingModel,
    command_line,
    load_line,
    machine_info,
    machine_lines,
    markdown_table,
    peak_memory,
    stage_sampler,
    timer,
)
from benchmarks.bench_samplers import fastest_equivalent, verdict_file
from benchmarks.sections import update_section
from mrnet_utils.config import StageConfig
from mrnet_utils.diffusion.processes import process_class
from mrnet_utils.presets import PRESETS, default_sampler, stage_config
from mrnet_utils.data.phantom import write_phantom
from mrnet_utils.errors import MRNetError
from mrnet_utils.data.preprocess import preprocess
from mrnet_utils.networks import build_network
from mrnet_utils.pipeline import (
    TrainedStage,
    bf16_autocast,
    sample_cascade,
    sample_stage,
)
from mrnet_utils.stages import CASCADE, STAGES
from mrnet_utils.training.log import read_train_log
from mrnet_utils.training.loop import train

PIPELINES = {"cascade": CASCADE, "single256": ("single256",)}


def seeded_network(cfg: StageConfig, device: torch.device) -> nn.Module:
    """The stage's network, seeded; its output layer re-drawn so that it predicts something (the
    project UNet zero-initialises it)."""
    torch.manual_seed(0)
    model = build_network(cfg.unet)
    last = model.output[-1] if isinstance(model.output, nn.Sequential) else model.output
    last.reset_parameters()
    return model.to(device).eval()  # the default memory format, as load_stage leaves it


def network_inputs(cfg: StageConfig, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A batch of (x_t, t, extra_args) for one forward pass."""
    side = cfg.resolution
    x = torch.randn(batch, 1, side, side, device=device)
    t = torch.full((batch,), cfg.diffusion.timesteps // 2, device=device, dtype=torch.long)
    extra = {}
    if cfg.is_super_resolution:
        cond = torch.randn(batch, 1, side, side, device=device)
        extra = {"cond": cond, "aug_level": torch.zeros(batch, device=device)}
    return x, t, extra


@torch.inference_mode()
def forward_ms(model: nn.Module, cfg: StageConfig, device: torch.device, batch: int, repeats: int) -> float:
    """Median wall-clock ms of one forward pass, after a warm-up pass."""
    x, t, extra = network_inputs(cfg, batch, device)
    times = []
    with bf16_autocast(device, cfg.train.mixed_precision):
        for _ in range(repeats + 1):
            with timer(device) as elapsed:
                model(x, t, **extra)
            times.append(elapsed[0])
    return 1000 * statistics.median(times[1:])


@torch.inference_mode()
def forward_gflops(model: nn.Module, cfg: StageConfig, device: torch.device) -> float:
    """GFLOPs of one forward pass of one image (matrix products and convolutions, as torch counts them)."""
    x, t, extra = network_inputs(cfg, 1, device)
    with FlopCounterMode(display=False) as counter:
        model(x, t, **extra)
    return counter.get_total_flops() / 1e9


@dataclass(frozen=True)
class SamplingCost:
    seconds_per_image: float
    nfe_per_image: float
    peak_mib: float
    memory_kind: str
    extrapolated: bool = False  # a stage's steps beyond the probe were not run: their network time is scaled up


def sample_pipeline(
    pipeline: str,
    networks: dict[str, tuple[nn.Module, StageConfig]],
    device: torch.device,
    images: int,
    batch_size: int,
    samplers: dict[str, tuple[str, int]],
    probe: int = 0,
) -> SamplingCost:
    """Seconds and network evaluations per final image; `samplers` maps stages to (sampler, steps).

    With `probe` > 0, a stage whose sampler takes more steps runs `probe` steps of the same sampler (where its
    process takes them), and the time its network took is scaled to the full count, as is its count of network
    evaluations: the cost of a step does not depend on how many there are (as the reference path's probe).
    """
    counted = {name: CountingModel(networks[name][0]) for name in PIPELINES[pipeline]}
    stages = [TrainedStage(counted[name], networks[name][1], 0, Path("untrained")) for name in counted]
    scale = {}
    for name in counted:
        sampler, steps = samplers[name]
        shorter = probe and steps > probe and _takes(networks[name][1], (sampler, probe))
        scale[name] = steps / probe if shorter else 1.0
    run = {name: (samplers[name][0], round(samplers[name][1] / scale[name])) for name in counted}
    with peak_memory(device) as memory, timer(device) as elapsed:
        sample_cascade(stages, list(range(images)), run, batch_size, progress=False)
    seconds = elapsed[0] + sum(model.seconds * (scale[name] - 1) for name, model in counted.items())
    nfe = sum(model.images * scale[name] for name, model in counted.items()) / images
    return SamplingCost(seconds / images, nfe, memory.mib, memory.kind, any(s > 1 for s in scale.values()))


def quality_checked(
    networks: dict[str, tuple[nn.Module, StageConfig]], verdicts: str, results: Path
) -> tuple[dict[str, tuple[nn.Module, StageConfig]], dict[str, tuple[str, int]], dict[str, str]]:
    """Each stage at its fastest path shown equivalent to its full chain (bench_samplers.fastest_equivalent over
    the `verdicts` preset's verdict file; the full chain where there is none): the networks with the path's
    config (its process's, on the same network), the samplers, and where each came from."""
    checked, samplers, sources = {}, {}, {}
    for name, (model, cfg) in networks.items():
        found = verdict_file(results, verdicts, cfg.name)
        if found.exists():
            row = fastest_equivalent(pd.read_csv(found).to_dict("records"))
            cfg = stage_config(name, cfg.preset, cfg.unet.use_swin, row["process"])
            checked[name], samplers[name], sources[name] = (model, cfg), (row["sampler"], int(row["steps"])), found.name
        else:
            own = process_class(cfg.diffusion.process).default_sampler(cfg.diffusion)
            checked[name], samplers[name], sources[name] = (model, cfg), own, "no verdict: the full chain"
    return checked, samplers, sources


def _timed(
    pipeline: str, networks: dict[str, tuple[nn.Module, StageConfig]], device: torch.device, images: int,
    batch_size: int, samplers: dict[str, tuple[str, int]], probe: int = 0,
) -> SamplingCost:
    """`sample_pipeline` after a warm-up batch of at most two steps per stage."""
    warm_up = {name: (sampler, min(steps, 2)) for name, (sampler, steps) in samplers.items()}
    warm_up = {name: choice for name, choice in warm_up.items() if _takes(networks[name][1], choice)}
    sample_pipeline(pipeline, networks, device, batch_size, batch_size, {**samplers, **warm_up})
    return sample_pipeline(pipeline, networks, device, images, batch_size, samplers, probe)


def _distinct_paths(pipeline: str, paths: dict[str, tuple[dict, dict[str, tuple[str, int]]]]) -> dict[str, tuple]:
    """`paths` with those that sample `pipeline` alike merged, their names joined ("defaults = quality-checked")."""
    named: dict[str, tuple[list[str], tuple]] = {}
    for path, (path_networks, path_samplers) in paths.items():
        text = _samplers_text(pipeline, path_networks, path_samplers)
        named.setdefault(text, ([], (path_networks, path_samplers)))[0].append(path)
    return {" = ".join(names): path for names, path in named.values()}


def _takes(cfg: StageConfig, sampler: tuple[str, int]) -> bool:
    try:
        process_class(cfg.diffusion.process).check_sampler(cfg.diffusion, sampler)
    except MRNetError:
        return False
    return True


def _samplers_text(pipeline: str, networks: dict[str, tuple[nn.Module, StageConfig]],
                   samplers: dict[str, tuple[str, int]]) -> str:
    """"ddpm 1000 + resshift 4 + resshift 4"; a stage of another process than its preset's is named by it."""
    parts = []
    for name in PIPELINES[pipeline]:
        cfg = networks[name][1]
        own = stage_config(name, cfg.preset, cfg.unet.use_swin).diffusion.process
        process = "" if cfg.diffusion.process == own else f"{cfg.diffusion.process} "
        parts.append(f"{process}{samplers[name][0]} {samplers[name][1]}")
    return " + ".join(parts)


def reference_steps(stage: str) -> int:
    """The reference study's T for `stage`, over which its ancestral sampler ran in full."""
    return stage_config(stage, "reference").diffusion.timesteps


def reference_seconds_per_image(
    pipeline: str, networks: dict[str, tuple[nn.Module, StageConfig]], device: torch.device, probe_steps: int
) -> tuple[float, bool]:
    """The reference's path: ancestral DDPM over its whole T (the reference preset's), batch 1. Returns (seconds,
    extrapolated).

    With probe_steps > 0, each stage runs `probe_steps` ancestral steps and its time is
    scaled to the reference's step count (the per-step cost does not depend on T).
    """
    total, extrapolated = 0.0, False
    for name in PIPELINES[pipeline]:
        model, cfg = networks[name]
        steps = reference_steps(name)
        run_steps, extrapolated = (probe_steps, True) if probe_steps and probe_steps < steps else (steps, extrapolated)
        # the reference's chain on this network: ancestral DDPM over T steps, whatever the stage's own process
        cfg = cfg.replace(diffusion={"process": "ddpm", "timesteps": steps, "prediction": "epsilon"})
        low = STAGES[name].low_resolution
        low_res = torch.zeros(1, 1, low, low) if low else None
        sample_stage(model, cfg, [0], low_res, ("ddpm", 2), 1, progress=False)  # warm-up
        with timer(device) as elapsed:
            sample_stage(model, cfg, [0], low_res, ("ddpm", run_steps), 1, progress=False)
        total += elapsed[0] * steps / run_steps
    return total, extrapolated


def synthetic_cache(folder: Path, exams: int = 4) -> Path:
    """A small slice cache from the synthetic phantom: `exams` train exams x 4 central slices."""
    write_phantom(folder / "phantom", train_exams=exams, valid_exams=1, progress=False)
    return preprocess(folder / "phantom", "coronal", folder / "cache.npz", central_slices=4, progress=False)


@dataclass(frozen=True)
class TrainingCost:
    images_per_second: float
    peak_mib: float
    memory_kind: str


def training_rate(
    cfg: StageConfig, cache: Path, device: torch.device, window: int, compile: bool = False
) -> TrainingCost:
    """Images/s of the real training loop over `window` steps, after a first window of warm-up steps."""
    # A fixed number of steps with a constant schedule: the steady cost of a step, not of an epoch's validation.
    cfg = cfg.replace(train=dict(steps=2 * window, epochs=0, lr_schedule="warmup", log_every=window,
                                 checkpoint_every=10**9, sample_every=0))
    with tempfile.TemporaryDirectory() as run, peak_memory(device) as memory:
        train(cfg, cache, run, progress=False, compile=compile, grids=False)
        last = read_train_log(run).iloc[-1]
    return TrainingCost(float(last["images_per_s"]), memory.mib, memory.kind)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def run(args: argparse.Namespace) -> tuple[str, list[dict[str, object]]]:
    """All measurements; returns the Markdown report and the sampling rows (none when only forward passes)."""
    device = torch.device(args.device)
    use_swin = args.variant == "swin"
    configs = {name: stage_config(name, args.preset, use_swin) for name in STAGES}
    networks = {name: (seeded_network(cfg, device), cfg) for name, cfg in configs.items()}
    sampled = args.parts != "forward"
    report = [machine_lines(machine_info(device), command_line("benchmarks.bench_efficiency", args.argv))]

    rows = []
    for name, (model, cfg) in networks.items():
        row = {
            "stage": f"{cfg.name} ({cfg.resolution}x{cfg.resolution})",
            "parameters (M)": sum(p.numel() for p in model.parameters()) / 1e6,
            "GFLOPs / image": forward_gflops(model, cfg, device),
            "ms / forward, batch 1": forward_ms(model, cfg, device, 1, args.repeats),
        }
        if sampled:
            batched = forward_ms(model, cfg, device, args.batch_size, args.repeats)
            row[f"ms / forward, batch {args.batch_size}"] = batched
        rows.append(row)
    report += ["### One forward pass per stage", markdown_table(rows)]
    if not sampled:
        return "\n\n".join(report), []

    sampling = rows = []
    checked_networks, checked, sources = quality_checked(networks, args.verdicts, args.results)
    paths = {path: (networks, {name: default_sampler(cfg, quick) for name, cfg in configs.items()}
                    | dict(args.samplers))
             for path, quick in (("quick", True), ("defaults", False))}
    paths["quality-checked"] = (checked_networks, checked)
    for pipeline in args.pipelines:
        reference, extrapolated = reference_seconds_per_image(pipeline, networks, device, args.reference_steps)
        for path, (path_networks, path_samplers) in _distinct_paths(pipeline, paths).items():
            cost = _timed(pipeline, path_networks, device, args.images, args.batch_size, path_samplers,
                          args.probe_steps)
            rows.append({
                "pipeline": pipeline,
                "path": path,
                f"samplers (batch {args.batch_size})": _samplers_text(pipeline, path_networks, path_samplers),
                "NFE / image": cost.nfe_per_image,
                "s / image": cost.seconds_per_image,
                f"peak memory (MiB, {cost.memory_kind})": cost.peak_mib,
                "timing": f"stages of more than {args.probe_steps} steps extrapolated" if cost.extrapolated
                    else "measured",
                "reference: DDPM, batch 1": "+".join(str(reference_steps(n)) for n in PIPELINES[pipeline]) + " steps",
                "reference s / image": reference,
                "reference timing": f"extrapolated from {args.reference_steps} steps per stage" if extrapolated
                    else "measured, whole chain",
                "speed-up": reference / cost.seconds_per_image,
            })
    verdict_lines = "\n".join(f"- {name}: {sources[name]}" for name in STAGES)
    report += [f"### Sampling 256x256 images ({args.images} images)",
               f"Quality-checked path, per stage (verdicts of the {args.verdicts} checkpoints):\n{verdict_lines}",
               markdown_table(rows)]
    by_batch = []
    for pipeline in args.pipelines:
        for batch in args.batch_sizes:
            cost = _timed(pipeline, checked_networks, device, batch, batch, checked, args.probe_steps)
            by_batch.append({"pipeline": pipeline, "samplers": _samplers_text(pipeline, checked_networks, checked),
                             "batch": batch, "s / image": cost.seconds_per_image,
                             f"peak memory (MiB, {cost.memory_kind})": cost.peak_mib,
                             "timing": "extrapolated" if cost.extrapolated else "measured"})
    report += ["### The quality-checked path by batch size", markdown_table(by_batch)]
    if args.parts == "sampling":
        return "\n\n".join(report), sampling

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        cache = synthetic_cache(Path(folder))
        for name in args.train_stages:
            cfg = configs[name]
            cost = training_rate(cfg, cache, device, args.train_window, args.compile)
            preset_seconds = cfg.train.steps * cfg.train.batch_size / cost.images_per_second
            rows.append({
                "stage": cfg.name,
                "batch": cfg.train.batch_size,
                "images / s": cost.images_per_second,
                f"peak memory (MiB, {cost.memory_kind})": cost.peak_mib,
                "preset steps": cfg.train.steps,
                "time for the preset's steps": _duration(preset_seconds),
            })
    report += [
        f"### Training (steps {args.train_window + 1}-{2 * args.train_window} of a run; "
        f"{'torch.compile' if args.compile else 'eager'})",
        markdown_table(rows),
    ]
    return "\n\n".join(report), sampling


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_efficiency", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=tuple(PRESETS), default="demo")
    parser.add_argument("--variant", choices=("swin", "noswin"), default="swin")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--parts", choices=("all", "sampling", "forward"), default=None,
        help="what to measure: all; forward passes and sampling (no training); forward passes only "
             "(default: all, but only the forward pass for the full and reference presets on a CPU)",
    )
    parser.add_argument("--pipelines", nargs="+", choices=tuple(PIPELINES), default=list(PIPELINES),
                        help="the pipelines sampled (default: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="sampling batch")
    parser.add_argument("--images", type=int, default=8, help="images sampled per pipeline")
    parser.add_argument("--verdicts", choices=tuple(PRESETS), default="demo",
                        help="whose checkpoints' equivalence verdicts (bench_samplers) choose the quality-checked path")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32],
                        help="batch sizes the quality-checked path is also timed at (with its peak memory)")
    parser.add_argument("--samplers", nargs="+", type=stage_sampler, default=[], metavar="STAGE=SAMPLER:STEPS",
                        help="instead of these stages' default sampler, e.g. base64=dpmpp_sde:50 sr1=dpmpp:10")
    parser.add_argument(
        "--reference-steps", type=int, default=20,
        help="ancestral steps timed per stage for the reference path, then scaled; 0 = run the whole chain",
    )
    parser.add_argument(
        "--probe-steps", type=int, default=0,
        help="sample a stage whose sampler takes more steps in this many and scale its network time (0: run all)",
    )
    parser.add_argument("--train-window", type=int, default=3, help="training steps timed (after as many warm-up)")
    parser.add_argument("--train-stages", nargs="+", choices=tuple(STAGES), default=list(STAGES))
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes (median)")
    parser.add_argument("--compile", action="store_true", help="train with torch.compile")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.parts is None:
        args.parts = "forward" if args.preset in ("full", "reference") and args.device == "cpu" else "all"
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report, sampling = run(args)
    report += "\n\n" + load_line()
    print(report)
    if not args.no_write:
        where = f"CPU, {torch.get_num_threads()} thread(s)" if args.device == "cpu" else "GPU"
        chosen = "".join(f", {stage}={name}:{steps}" for stage, (name, steps) in args.samplers)
        update_section(args.results, f"Efficiency: {args.preset} preset, {args.variant}, {where}{chosen}", report)
        if sampling:  # the sampling rows as a file the README can cite (scripts/readme_tables.py)
            device = f"cpu{torch.get_num_threads()}" if args.device == "cpu" else "gpu"
            chosen = "".join(f"_{stage}-{name}{steps}" for stage, (name, steps) in args.samplers)
            pd.DataFrame(sampling).to_csv(
                args.results.with_name(f"efficiency_{args.preset}_{args.variant}_{device}{chosen}.csv"), index=False
            )
    return report


if __name__ == "__main__":
    main()
