"""Does guidance make a label show? The label probe's agreement with the requested label, by guidance scale.

    python -m benchmarks.bench_guidance     # the label study's demo stage (bash run_all.sh --only labels)

The label study (study.labels, `bash run_all.sh --only labels`) draws `label_samples` guided samples
per request and scale (32 at the demo preset): too few to tell a change of a few tenths in the share
the probe puts on the requested side from chance. This benchmark asks the same question of the same
trained stage and the same probe recipe (trained on the real train slices, seeded) with many more
samples: study.labels.agreement with `--samples` seeds per request, every scale from the same seeds,
each scale compared with the unconditional one seed by seed (the paired change in share, its 95%
interval from resampling seeds, and the verdict).

The probe is only as good as its reading of real knees: the table keeps, per request, the share of
real valid slices of that label the probe puts on the requested side (`real_share`), from the valid
exams not set aside for tuning. The sizes and scales are fixed by the arguments before the run.

Prints a Markdown table and writes it, with the machine and the command, to its section of
benchmarks/RESULTS.md (`--no-write` to skip).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from benchmarks.common import (
    RESULTS,
    command_line,
    load_line,
    machine_info,
    machine_lines,
    markdown_table,
    timer,
)
from benchmarks.sections import update_section
from mrnet_utils.presets import preset
from mrnet_utils.diffusion.guidance import parse_labels
from mrnet_utils.evaluation import probe
from mrnet_utils.study import labels
from mrnet_utils.training.checkpoint import load_stage


def summary(table: pd.DataFrame) -> str:
    """One line per request: its share at the first and the last scale, the change and the verdict."""
    scales = table.index.get_level_values("guidance").unique()
    lines = []
    for request, rows in table.groupby(level="request", sort=False):
        first, last = rows.xs(scales[0], level="guidance").iloc[0], rows.xs(scales[-1], level="guidance").iloc[0]
        lines.append(f"- {request}: share {first['share']:.3f} at guidance {scales[0]:g}, {last['share']:.3f} at "
                     f"{scales[-1]:g}; change {last['change']:+.3f} [{last['change_low']:+.3f}, "
                     f"{last['change_high']:+.3f}]: {last['verdict']} (real slices: {first['real_share']:.3f} of "
                     f"{int(first['real_slices'])})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
    device = torch.device(args.device)
    stage = load_stage(args.checkpoint, device)
    study = preset(stage.config.preset).study
    tuning = study.tuning_exams if args.tuning_exams is None else args.tuning_exams
    steps = study.probe_steps if args.probe_steps is None else args.probe_steps
    train, valid, reported = labels.real_slices(args.data, tuning)
    label_probe = probe.train_probe(train.images, train.labels, steps, progress=args.progress)
    with timer(device) as seconds:
        table = labels.agreement(stage, label_probe, train, valid, reported, args.samples, args.batch_size,
                                 progress=args.progress, requests=args.requests, scales=args.scales)
    title = f"Guidance: {stage.config.name}, {stage.config.preset} checkpoint, {args.samples} samples per request and scale"
    body = "\n\n".join([
        machine_lines(machine_info(device), command_line("benchmarks.bench_guidance", args.argv)),
        f"Checkpoint {stage.path} (step {stage.step}); probe trained {steps} steps on {len(train.images)} real train "
        f"slices; real shares from {int(reported.sum())} slices of {valid.exam_ids[reported].unique().numel()} "
        f"reported valid exams ({tuning} set aside for tuning). Sampling and scoring took {seconds[0]:.0f} s.",
        f"**Guidance {args.scales[-1]:g} against {args.scales[0]:g}, paired by seed:**\n\n{summary(table)}",
        markdown_table(table.reset_index().to_dict("records")),
        load_line(),
    ])
    print(f"## {title}\n\n{body}\n", flush=True)
    if not args.no_write:
        update_section(args.results, title, body)
    return body


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_guidance", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo/slices_coronal.npz"),
                        help="slice cache written by preprocess (default: run_all.sh's)")
    parser.add_argument("--checkpoint", type=Path, default=Path("savepoints/demo/base64_labels"),
                        help="run folder of a label-conditional stage (default: the label study's demo stage)")
    parser.add_argument("--samples", type=int, default=256, help="guided samples per request and scale")
    parser.add_argument("--requests", nargs="+", type=parse_labels, default=list(labels.REQUESTS),
                        help="requests such as acl=1, one label each (default: each label at 1 and at 0)")
    parser.add_argument("--scales", nargs="+", type=float, default=list(labels.SCALES),
                        help="guidance scales, the first the one the others are compared with (default: 0 1 3)")
    parser.add_argument("--probe-steps", type=int, help="training steps of the probe (default: the preset's)")
    parser.add_argument("--tuning-exams", type=int, help="valid exams set aside for tuning (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.requests, args.scales, args.argv = tuple(args.requests), tuple(args.scales), argv
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run(args)


if __name__ == "__main__":
    main()
