"""The study's claims, declared before any run: its primary endpoints and the equivalence margins.

Primary endpoints, tested together with Holm's family-wise correction (statistics.holm): for each
super-resolution task (SR1 64 -> 128, SR2 128 -> 256, and the two chained 64 -> 256), PSNR and SSIM
of the project's diffusion SR stages (with Swin), both as one sample and as the posterior mean (the
mean of several draws, at that many times the network evaluations), each against Lanczos
interpolation and against the regression baseline (the same network, data and budget, trained
without noise): 3 tasks x 2 outputs x 2 baselines x 2 metrics = 24 tests, whose chance of any false
"better" stays below 5%. Every other comparison the study reports is exploratory: read at its own 5%
level, it suggests, it does not establish.

A verdict of no difference is only ever "equivalent within" a margin fixed here (two one-sided tests,
statistics.Comparison.equivalence_p); a metric without a margin gets no equivalence verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIMARY = "primary"
EXPLORATORY = "exploratory"


@dataclass(frozen=True)
class Margin:
    """An equivalence margin in the metric's units: differences smaller than this do not matter."""

    value: float
    unit: str = ""  # written after the number, e.g. " dB"


# A project choice, fixed before the runs: differences the study does not count as mattering, not a
# perceptual threshold.
MARGINS = {"psnr": Margin(0.2, " dB"), "ssim": Margin(0.005)}


@dataclass(frozen=True)
class Endpoint:
    """One primary test: `model`'s `output` ("sample" or "mean") against `baseline` on `metric`, in `task`.

    `model` and `baseline` are labels of the study's SR models (study.layout.SR_MODELS) or the name of
    an interpolation (evaluation.metrics.INTERPOLATIONS)."""

    task: str
    model: str
    output: str
    baseline: str
    metric: str


SR_ENDPOINTS = tuple(
    Endpoint(task, "Swin", output, baseline, metric)
    for task in ("sr1_64_to_128", "sr2_128_to_256", "cascade_64_to_256")
    for output in ("sample", "mean")
    for baseline in ("lanczos", "regression")
    for metric in ("psnr", "ssim")
)
