"""Fixtures shared by several test files: a tiny phantom, its slice cache, smoke-trained runs.

All are session-scoped and built on first use, so a test file that needs none of them
pays nothing, and files that share one build it once.
"""

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch_threads import one_thread

from mrnet_utils import cli
from mrnet_utils.data.phantom import write_phantom
from mrnet_utils.data.preprocess import preprocess

# Smoke runs are trained for 4 steps instead of the preset's 6: still one step checkpoint
# (checkpoint_every=3), two log rows (log_every=2), and EMA weights that differ from the raw ones.
SMOKE_STEPS = 4


def pytest_configure(config):
    """Under pytest-xdist (scripts/test.sh runs two workers) the workers share the cores: each, and every
    process it starts (notebook kernels, torchrun, the command line), gets its share of threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(items):
    """Files with the most end-to-end (`slow`) tests first, in a stable order: scripts/test.sh hands each
    worker one file at a time in this order (--dist loadfile --no-loadscope-reorder), so the longest
    file starts at once instead of last.

    Under a mutation run (mutmut runs a mutant's tests with -x) the `slow` tests go
    last instead: a mutant that a quick test kills then never waits for a training run. The order changes
    how long a verdict takes, not the verdict."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is not None)
        return
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory) -> Path:
    """The synthetic knee phantom in MRNet's layout: 4 train and 2 valid exams."""
    return write_phantom(tmp_path_factory.mktemp("phantom") / "MRNet", 4, 2, seed=0, progress=False, workers=1)


@pytest.fixture(scope="session")
def tiny_cache(tiny_phantom, tmp_path_factory) -> Path:
    """Its coronal slice cache, 2 central slices per exam: 8 train and 4 valid slices."""
    out = tmp_path_factory.mktemp("cache") / "coronal.npz"
    return preprocess(tiny_phantom, "coronal", out, central_slices=2, progress=False)


@dataclass(frozen=True)
class SmokeRun:
    exit_code: int  # of `cli.main(["train", ...])`
    folder: Path
    steps: int


@pytest.fixture(scope="session")
def smoke_run(tiny_cache, tmp_path_factory):
    """`smoke_run(stage, use_swin=True) -> SmokeRun`: a smoke-preset run trained through `cli.main`.

    Each of the eight (stage, variant) runs is trained once per session, on first request;
    test_cli.py checks the exit codes and folders, other files read the checkpoints.
    Treat the folders as read-only (copy one to change it). They are trained on one thread
    whichever test asks first, so that their bits do not depend on that test's thread setting.
    """
    root = tmp_path_factory.mktemp("smoke_runs")
    runs: dict[str, SmokeRun] = {}

    def run(stage: str, use_swin: bool = True) -> SmokeRun:
        name = f"{stage}_{'swin' if use_swin else 'noswin'}"
        if name not in runs:
            folder = root / name
            argv = ["train", "--stage", stage, "--preset", "smoke", "--steps", str(SMOKE_STEPS)]
            argv += ["--data", str(tiny_cache), "--out", str(folder)] + ([] if use_swin else ["--no-swin"])
            with one_thread():
                runs[name] = SmokeRun(cli.main(argv), folder, SMOKE_STEPS)
        return runs[name]

    return run
