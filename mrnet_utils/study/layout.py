"""What the study is made of and where each part of it lives on disk.

One output folder holds the whole study of one preset (`StudyPaths`):

    data/phantom/                            the synthetic MRNet folder (when no MRNet path is given)
    data/<preset>/slices_<plane>.npz         the slice cache
    savepoints/<preset>/<stage>_<swin|noswin>/   one training run folder each (training.loop.train)
    savepoints/<preset>/samples/<model>/     generated images and their sampling time
    results/<preset>/                        tables (CSV + Markdown), figures (PNG), run records (JSON); git-ignored
                                             (the committed record, evaluation/results/<preset>/, is written only
                                             when asked: run_all.sh --refresh-results)
    runs/<preset>/                           the executed notebooks (written by run_all.sh)

The models the study compares are `GENERATORS`; the runs it trains (`study_runs`) are
the stages they use, which `run_all.sh` reads from here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from mrnet_utils.config import run_name
from mrnet_utils.files import write_json
from mrnet_utils.presets import preset
from mrnet_utils.stages import CASCADE, STAGES

# The two network variants of every cascade stage: with and without the Swin bottleneck.
VARIANTS = {"Swin": True, "no Swin": False}


@dataclass(frozen=True)
class Generator:
    """A generative model of the study: its stages (stage, use_swin, process), sampled in this order; process
    None is the stage's own (the preset's), another names a process the stage is switched to (its run's name
    says so, config.run_name)."""

    label: str  # row name in tables and figures
    folder: str  # folder of its samples
    stages: tuple[tuple[str, bool, str | None], ...]


GENERATORS = (
    Generator("cascade (Swin)", "cascade_swin", tuple((stage, True, None) for stage in CASCADE)),
    Generator("cascade (no Swin)", "cascade_noswin", tuple((stage, False, None) for stage in CASCADE)),
    Generator("single-stage 256", "single256", (("single256", True, None),)),
    # The Swin cascade with its base stage distilled to a few DDIM steps (diffusion/processes/distilled.py).
    Generator("cascade (Swin, distilled base)", "cascade_swin_distilled",
              tuple((stage, True, "distilled" if stage == CASCADE[0] else None) for stage in CASCADE)),
)


@dataclass(frozen=True)
class SRModel:
    """A model of the super-resolution comparison: a variant of the SR stages, or the regression baseline."""

    label: str  # in row names: "SR1 (Swin), sample"
    use_swin: bool
    process: str | None = None  # None: the preset's; else a baseline process (diffusion.processes), e.g. regression


SR_MODELS = (
    SRModel("Swin", True),
    SRModel("no Swin", False),
    # The same network, data, degradation, conditioning and budget as the Swin stage, without noise.
    SRModel("regression", True, "regression"),
)


def study_runs() -> list[tuple[str, bool, str | None]]:
    """Every (stage, use_swin, process) the study trains, once each: the generators' stages of their own
    process in the order they first use them, then those the generators switch to another process (a
    distilled generator, after the run it learns from), then the regression baselines of the SR stages."""
    runs: list[tuple[str, bool, str | None]] = []
    used = [run for generator in GENERATORS for run in generator.stages]
    for stage in dict.fromkeys(stage for stage, _, _ in used):
        runs += [(stage, use_swin, None) for use_swin in VARIANTS.values() if (stage, use_swin, None) in used]
    runs += [run for run in dict.fromkeys(used) if run[2] is not None]
    sr_stages = [stage for stage in CASCADE if STAGES[stage].is_super_resolution]
    runs += [(stage, model.use_swin, model.process) for model in SR_MODELS if model.process for stage in sr_stages]
    return runs


@dataclass(frozen=True)
class StudyPaths:
    """Where each part of one preset's study lives under `root` (see the module docstring)."""

    root: Path
    preset: str
    results_dir: Path | None = None  # where tables and figures go; None: root/results/<preset>

    def __post_init__(self) -> None:
        preset(self.preset)  # an error listing the presets if unknown
        object.__setattr__(self, "root", Path(self.root).resolve())
        if self.results_dir is not None:
            object.__setattr__(self, "results_dir", Path(self.results_dir).resolve())

    @property
    def phantom(self) -> Path:
        return self.root / "data" / "phantom"

    def cache(self, plane: str) -> Path:
        return self.root / "data" / self.preset / f"slices_{plane}.npz"

    @property
    def savepoints(self) -> Path:
        return self.root / "savepoints" / self.preset

    def run(self, stage: str, use_swin: bool, process: str | None = None) -> Path:
        return self.savepoints / run_name(stage, use_swin, process)

    def samples(self, generator: Generator) -> Path:
        return self.savepoints / "samples" / generator.folder

    @property
    def results(self) -> Path:
        return self.results_dir or self.root / "results" / self.preset


def pick_device(requested: str | None = None) -> torch.device:
    """`requested`, else the GPU when there is one."""
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def write_record(path: str | Path, record) -> Path:
    """Write a dataclass or dict as strict JSON, atomically (files.write_json), creating the folder: paths as
    strings, a NaN ("not measured", such as the speed of a run that trained no step) as null."""
    values = dataclasses.asdict(record) if dataclasses.is_dataclass(record) else dict(record)
    values = {
        key: str(value) if isinstance(value, Path) else None if isinstance(value, float) and math.isnan(value) else value
        for key, value in values.items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, values, "run record")
