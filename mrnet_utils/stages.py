"""The stages of the study, in one table: what each makes, from what, and its random streams.

Every other module reads a stage's geometry from `STAGES`; adding a stage (say a 256 -> 512
super-resolution stage) means adding a row here, after which every preset builds it from its
shared settings (mrnet_utils/presets.py). A cascade is a list of stages chained in order, each
super-resolution stage taking the previous stage's output as its low-res input (`CASCADE`).

Random streams. Image i of a stage draws its starting noise and its per-step noise from
`noise_stream` and, for a super-resolution stage, its conditioning-augmentation noise
from `condition_stream` (diffusion.samplers.noise_from_seeds). Every stream number is
given here explicitly and used once, so that a new stage never changes the noise of an
existing one.
"""

from __future__ import annotations

from dataclasses import dataclass

from mrnet_utils.errors import MRNetError


@dataclass(frozen=True)
class StageSpec:
    name: str
    resolution: int  # output side
    low_resolution: int | None  # side of the low-res input of a super-resolution stage; None: generates from noise
    noise_stream: int
    condition_stream: int | None = None  # super-resolution stages only

    @property
    def is_super_resolution(self) -> bool:
        return self.low_resolution is not None


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec("base64", 64, None, noise_stream=0),
        StageSpec("sr1", 128, 64, noise_stream=1, condition_stream=5),
        StageSpec("sr2", 256, 128, noise_stream=2, condition_stream=6),
        StageSpec("single256", 256, None, noise_stream=3),
    )
}
CASCADE = ("base64", "sr1", "sr2")  # generated 64x64, then super-resolved twice


def stage_spec(name: str) -> StageSpec:
    """The row of `STAGES` for `name`, or an error listing the stages."""
    if name not in STAGES:
        raise MRNetError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
    return STAGES[name]


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
