"""Write docs/presets.md: every setting of every stage in the presets, side by side, from presets.PRESETS.

    python scripts/preset_table.py            # rewrite docs/presets.md
    python scripts/preset_table.py --check    # exit 1 if docs/presets.md is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd

from mrnet_utils.config import run_name
from mrnet_utils.diffusion.processes import process_class
from mrnet_utils.presets import PRESETS, default_sampler, stage_config
from mrnet_utils.evaluation.tables import markdown
from mrnet_utils.study.layout import study_runs
from mrnet_utils.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "presets.md"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
THROUGHPUT = "GPU check: NVIDIA H200 (CUDA 13.0)"  # the section of RESULTS.md the gpu preset's budget is sized by
SHOWN = ("reference", "full", "gpu", "demo")  # smoke is test plumbing


def render() -> str:
    lines = [
        "# Every setting of the presets",
        "",
        "Written by `python scripts/preset_table.py` from `mrnet_utils/presets.py` (tests/test_readme.py",
        "checks it is current). The reference study's own values, with the notebook cell of each, are in",
        "docs/reference.md. Settings are per stage, with the Swin bottleneck (the no-Swin variants differ",
        "only in `unet.use_swin`, and in the `reference` preset in the epochs and learning rate of its runs).",
        "Any setting can be changed for one run with `train --set KEY=VALUE` (e.g. `--set train.lr=1e-4`).",
        "A stage's default sampler is its full chain, or a faster one shown equivalent to it on the preset's",
        "checkpoints; its quick sampler is what the preset's study and training grids sample with where its time",
        "cannot hold the chain (`presets.default_sampler`; none shown equivalent: docs/results.md, \"Which sampler\").",
    ]
    for stage in STAGES:
        columns = {}
        for name in SHOWN:
            cfg = stage_config(stage, name, use_swin=True)
            samplers = {f"{kind} sampler": " ".join(map(str, default_sampler(cfg, quick)))
                        for kind, quick in (("default", False), ("quick", True))}
            columns[f"`{name}`"] = {key: str(value) for key, value in cfg.flat_settings().items()
                                    if key not in ("stage", "preset")} | samplers
        table = pd.DataFrame(columns)
        table.index.name = "setting"
        lines += ["", f"## {stage}", "", markdown(table)]
    study = pd.DataFrame({f"`{name}`": {key: str(value) for key, value in dataclasses.asdict(PRESETS[name].study).items()}
                          for name in SHOWN})
    study.index.name = "study setting"
    lines += ["", "## The study each preset runs", "", markdown(study)]
    lines += gpu_budget()
    return "\n".join(lines) + "\n"


def measured_throughput() -> dict[str, float]:
    """Training images/s per run name, from the "training throughput" table of RESULTS.md's `THROUGHPUT` section."""
    section = RESULTS.read_text(encoding="utf-8").split(f"## {THROUGHPUT}\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("### training throughput\n", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    return {row[0]: float(row[header.index("images / s")]) for row in rows}


def gpu_budget() -> list[str]:
    """The `gpu` preset's training time on full MRNet, worked out from measured throughput."""
    throughput = measured_throughput()
    # A distilled generator's rounds have no measured GPU throughput (each step also runs its teacher twice).
    distilled = [run for run in study_runs() if run[2] and process_class(run[2]).from_teacher]
    runs = [stage for stage, use_swin, process in study_runs() if (stage, use_swin, process) not in distilled]
    rows, total = [], 0.0
    for stage in STAGES:
        cfg = stage_config(stage, "gpu")
        images = cfg.train.steps * cfg.train.batch_size
        seconds = images / throughput[f"{stage}_swin"]
        total += seconds * runs.count(stage)
        rows.append({"stage": stage, "epochs": cfg.train.epochs, "steps on MRNet": cfg.train.steps,
                     "images": images, "images / s": throughput[f"{stage}_swin"], "s per run": round(seconds),
                     "runs in the study": runs.count(stage), "s": round(seconds * runs.count(stage))})
    return [
        "", "## The `gpu` preset's budget on MRNet", "",
        "Its epochs on MRNet's 1,130 training exams x 5 central coronal slices (354 steps of 16 an epoch), at the",
        f"training throughput measured in benchmarks/RESULTS.md, \"{THROUGHPUT}\" (bf16, batch 16, eager; the SR",
        "stages were then DDPM stages: the network's cost per step is the same under ResShift). Other GPUs: scale",
        "by their measured throughput; on the phantom or the real sample the epochs count far fewer slices.", "",
        markdown(pd.DataFrame(rows).set_index("stage")), "",
        f"All {len(runs)} runs: {total:,.0f} s = {total / 60:.0f} min of training on that GPU. Not counted: the "
        f"distilled generator{'s' if len(distilled) > 1 else ''} "
        f"({', '.join(run_name(*run) for run in distilled)}), whose throughput on a GPU is not measured.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/presets.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(ROOT)} is out of date; run python scripts/preset_table.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
