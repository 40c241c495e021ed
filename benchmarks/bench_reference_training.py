"""Training speed of the reference study's networks: its own settings against this project's training loop.

    python -m benchmarks.bench_reference_training                 # every stage, on the GPU if there is one

The same network (the `reference` preset: networks/reference.py) and batch (16, or `--batch`), trained by the
project's loop (training.loop.train) two ways, on a few synthetic exams:
- "reference settings": fp32, eager, as the reference's notebooks trained;
- "project loop": bf16 autocast, channels-last tensors (both on CUDA only) and torch.compile.
Images per second over a window of steps after as many warm-up steps (compilation included in the
warm-up). The goal on a GPU is at least 3x; on a CPU, bf16 is emulated and compilation rarely pays.
Writes its table, with the machine and the command, to benchmarks/RESULTS.md (`--no-write` to skip).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.bench_efficiency import synthetic_cache, training_rate
from benchmarks.common import (
    RESULTS,
    command_line,
    device_name,
    load_line,
    machine_info,
    machine_lines,
    markdown_table,
)
from benchmarks.sections import update_section
from mrnet_utils.presets import stage_config
from mrnet_utils.stages import STAGES


def run(args: argparse.Namespace) -> str:
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        cache = synthetic_cache(Path(folder))
        for name in args.stages:
            cfg = stage_config(name, "reference", use_swin=True).replace(train=dict(batch_size=args.batch))
            reference = training_rate(cfg.replace(train=dict(mixed_precision=False)), cache, device, args.window)
            project = training_rate(cfg.replace(train=dict(mixed_precision=True)), cache, device, args.window,
                                    compile=args.compile)
            rows.append({
                "stage": cfg.name,
                "batch": cfg.train.batch_size,
                "reference settings (fp32, eager) images/s": reference.images_per_second,
                f"project loop (bf16{', channels-last' if device.type == 'cuda' else ''}"
                f"{', compile' if args.compile else ''}) images/s": project.images_per_second,
                "speed-up": project.images_per_second / reference.images_per_second,
            })
    return "\n\n".join([
        machine_lines(machine_info(device), command_line("benchmarks.bench_reference_training", args.argv)),
        f"The reference's networks (`reference` preset), batch {args.batch}, images/s over steps {args.window + 1}-"
        f"{2 * args.window} of a run on {device_name(device)}.",
        markdown_table(rows),
        load_line(),
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_reference_training",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--stages", nargs="+", choices=tuple(STAGES), default=list(STAGES))
    parser.add_argument("--window", type=int, default=5, help="training steps timed (after as many warm-up)")
    parser.add_argument("--batch", type=int, default=16, help="images per training step (the reference's: 16)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the project loop's network (default: on CUDA only)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    report = run(args)
    print(report)
    if not args.no_write:
        where = "CPU" if args.device == "cpu" else "GPU"
        update_section(args.results, f"Training speed of the reference networks, {where}", report)
    return report


if __name__ == "__main__":
    main()
