"""The stages of the study, in one table: what each makes, from what, and how it samples by default.

Every other module reads a stage's facts from `STAGES`; adding a stage (say a 256 -> 512
super-resolution stage) means adding a row here and nothing else. A cascade is a list
of stages chained in order, each super-resolution stage taking the previous stage's
output as its low-res input (`CASCADE`).

Random streams. Image i of a stage draws its starting noise and its per-step noise from
`noise_stream` and, for a super-resolution stage, its conditioning-augmentation noise
from `condition_stream` (diffusion.samplers.noise_from_seeds). Every stream number is
given here explicitly and used once, so that a new stage never changes the noise of an
existing one.
"""

from __future__ import annotations

from dataclasses import dataclass

from mrnet_utils.errors import MRNetError

SamplerChoice = tuple[str, int]  # (a name in diffusion.samplers.SAMPLERS, number of steps)


@dataclass(frozen=True)
class StageSpec:
    name: str
    resolution: int  # output side
    low_resolution: int | None  # side of the low-res input of a super-resolution stage; None: generates from noise
    sampler: SamplerChoice  # default sampler (benchmarks/RESULTS.md, "Samplers: ..." sections)
    noise_stream: int
    condition_stream: int | None  # super-resolution stages only
    self_attention: bool  # the presets give its network self-attention (the reference's base model has it)
    reference_steps: int  # the reference study's T, which its ancestral sampler ran in full
    full_epochs: int  # epochs of the reference's data that the `full` preset trains (config._full)

    @property
    def is_super_resolution(self) -> bool:
        return self.low_resolution is not None


# Default samplers: the fewest network evaluations within the stated margin of the full ancestral
# chain on trained demo checkpoints. SR stages: the deterministic DPM-Solver++(2M). Generating stages:
# the stochastic SDE-DPM-Solver++(2M), since the deterministic solvers came out smoother than the chain.
STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec("base64", 64, None, ("dpmpp_sde", 25), 0, None, True, 2000, 600),
        StageSpec("sr1", 128, 64, ("dpmpp", 20), 1, 5, False, 1000, 150),
        StageSpec("sr2", 256, 128, ("dpmpp", 10), 2, 6, False, 1000, 150),
        StageSpec("single256", 256, None, ("dpmpp_sde", 100), 3, None, False, 2000, 600),
    )
}
CASCADE = ("base64", "sr1", "sr2")  # generated 64x64, then super-resolved twice


def stage_spec(name: str) -> StageSpec:
    """The row of `STAGES` for `name`, or an error listing the stages."""
    if name not in STAGES:
        raise MRNetError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
    return STAGES[name]


# The process of the learned baselines (diffusion.processes): trained like a stage, named apart from it.
BASELINE_PROCESS = "regression"


def run_name(stage: str, use_swin: bool, process: str | None = None) -> str:
    """The name of a trained variant, such as `sr1_swin`, `base64_noswin` or the baseline `sr1_swin_regression`:
    its run folder and table row."""
    name = f"{stage}_{'swin' if use_swin else 'noswin'}"
    return f"{name}_{process}" if process == BASELINE_PROCESS else name


def check_chain(stages: list[str] | tuple[str, ...]) -> None:
    """Refuse a cascade whose first stage does not generate, or whose stage i+1 does not take stage i's output."""
    if not stages or stage_spec(stages[0]).is_super_resolution:
        raise MRNetError(f"a cascade starts with a stage that generates from noise, not {list(stages)}")
    for before, after in zip(stages[:-1], stages[1:]):
        made, taken = stage_spec(before).resolution, stage_spec(after).low_resolution
        if taken is None:
            raise MRNetError(f"stage {after} generates from noise; it cannot follow {before} in a cascade {list(stages)}")
        if taken != made:
            raise MRNetError(
                f"stage {after} takes {taken}x{taken} inputs, but {before} before it makes {made}x{made} images"
            )
