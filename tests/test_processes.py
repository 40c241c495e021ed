"""The processes behind one interface: each builds its own schedule, condition, loss and samples with every
argument it was given, refuses a sampler or step count it cannot run (naming the parameter), and a new process
is one class plus one registry entry: a toy process below trains and samples through the real loop and pipeline.

A stand-in network (a fixed function of its inputs that records what it was called with) keeps these fast
and makes the regression baseline's loss and output computable by hand.
"""

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mrnet_utils.config import DiffusionConfig
from mrnet_utils.diffusion import losses, samplers
from mrnet_utils.diffusion.processes import PROCESSES, Process, build_process, process_class, resshift
from mrnet_utils.diffusion.schedules import NoiseSchedule
from mrnet_utils.errors import MRNetError


class StandIn:
    """output = scale * x + shift + 0.1 * cond + 0.001 * t; records each call's t and keyword arguments."""

    def __init__(self, scale: float = 0.5, shift: float = 0.0, dtype: torch.dtype | None = None) -> None:
        self.scale, self.shift, self.dtype, self.calls = scale, shift, dtype, []

    def __call__(self, x, t, cond=None, aug_level=None):
        self.calls.append({"t": t.clone(), "cond": cond, "aug_level": aug_level})
        out = self.scale * x + self.shift + 0.001 * t.view(-1, 1, 1, 1).to(x.dtype)
        out = out if cond is None else out + 0.1 * cond
        return out.to(self.dtype or x.dtype)  # a dtype of its own: as a bf16 network under autocast


def images(seed: int, batch: int = 3, side: int = 8) -> torch.Tensor:
    return torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def extra(batch: int = 3) -> dict:
    return {"cond": images(9, batch), "aug_level": torch.full((batch,), 0.2)}


RESSHIFT = DiffusionConfig(process="resshift", timesteps=5, kappa=1.5, eta_power=0.7, prediction="x0", loss="l1")


def test_each_process_builds_its_own_schedule_from_every_field():
    ddpm = DiffusionConfig(timesteps=50, schedule="cosine", prediction="v")
    schedule = build_process(ddpm).schedule
    assert isinstance(schedule, NoiseSchedule) and schedule.prediction == "v" and schedule.betas.device.type == "cpu"
    assert torch.equal(schedule.betas, NoiseSchedule.from_config(ddpm).betas)
    chain = build_process(RESSHIFT).schedule
    assert chain.kappa == 1.5 and chain.prediction == "x0" and len(chain.etas) == 5
    # ResShift's eq. 10-11: eta_1 = min((0.04 / kappa)^2, 0.001), and log(eta_t / eta_1) grows as ((t - 1) / (T - 1))^p
    assert math.isclose(float(chain.etas[0]), (0.04 / 1.5) ** 2)
    shape = torch.log(chain.etas / chain.etas[0]) / math.log(float(chain.etas[-1] / chain.etas[0]))
    torch.testing.assert_close(shape, (torch.arange(5, dtype=torch.float64) / 4) ** 0.7)
    assert build_process(DiffusionConfig(process="regression", timesteps=1, prediction="residual")).schedule is None


def test_ddpm_and_resshift_losses_are_their_modules_losses_with_every_setting():
    x0, noise, t = images(1), images(2), torch.tensor([0, 3, 4])
    ddpm = build_process(DiffusionConfig(timesteps=5, min_snr_gamma=5.0))
    got = ddpm.loss(StandIn(), x0, t, noise, extra(), None)
    assert torch.equal(got, losses.diffusion_loss(StandIn(), ddpm.schedule, x0, t, noise, 5.0, extra()))
    assert not torch.allclose(got, losses.diffusion_loss(StandIn(), ddpm.schedule, x0, t, noise, 0.0, extra()))
    chain, y0 = build_process(RESSHIFT), images(3)
    got = chain.loss(StandIn(), x0, t, noise, extra(), y0)
    assert got.shape == (3,)
    assert torch.equal(got, resshift.resshift_loss(StandIn(), chain.schedule, x0, y0, t, noise, extra(), "l1"))
    assert not torch.allclose(got, resshift.resshift_loss(StandIn(), chain.schedule, x0, y0, t, noise, extra(), "l2"))


@pytest.mark.parametrize("prediction, loss", [("residual", "l2"), ("residual", "l1"), ("x0", "l2")])
def test_the_regression_loss_by_hand(prediction, loss):
    """A network that outputs the constant 0.3 at y_0 = 0.25: x_0-hat is 0.55 (residual) or 0.3 (x0), and each
    sample's loss is its one squared or absolute error, whatever the image size."""
    process = build_process(DiffusionConfig(process="regression", timesteps=1, prediction=prediction, loss=loss))
    targets = torch.tensor([-0.5, 0.0, 0.9])
    x0 = targets.view(3, 1, 1, 1).expand(3, 1, 8, 8).clone()
    network = StandIn(scale=0.0, shift=0.3)
    got = process.loss(network, x0, torch.tensor([7, 7, 7]), images(2), {}, torch.full_like(x0, 0.25))
    error = (0.55 if prediction == "residual" else 0.3) - targets
    torch.testing.assert_close(got, error.square() if loss == "l2" else error.abs())
    t = network.calls[0]["t"]
    assert t.dtype == torch.long and torch.equal(t, torch.zeros(3, dtype=torch.long))  # one pass at t = 0


def test_the_regression_baseline_outputs_its_prediction_clamped_to_the_data_range():
    process = build_process(DiffusionConfig(process="regression", timesteps=1, prediction="residual"))
    y0, network = images(4), StandIn(scale=3.0, shift=0.2, dtype=torch.float64)
    got = process.sample(network, ("regression", 1), y0, extra(), None, y0)
    assert got.dtype == y0.dtype  # the network's output is taken in the images' dtype
    hand = y0 + 3.0 * y0 + 0.2 + 0.1 * extra()["cond"]
    assert hand.max() > 1 and hand.min() < -1  # both bounds matter
    torch.testing.assert_close(got, hand.clamp(-1, 1))
    assert torch.equal(network.calls[0]["cond"], extra()["cond"]) and torch.equal(network.calls[0]["aug_level"],
                                                                                   extra()["aug_level"])


def test_ddpm_and_resshift_sample_with_their_modules_samplers_steps_and_generators():
    noise, y0 = images(5), images(6)
    ddpm = build_process(DiffusionConfig(timesteps=20))
    seeds = [3, 4, 5]
    got = ddpm.sample(StandIn(), ("ddpm", 4), noise, extra(), samplers.generators_from_seeds(seeds, "cpu"), None)
    same = samplers.sample("ddpm", StandIn(), ddpm.schedule, noise, 4, extra_args=extra(),
                           generators=samplers.generators_from_seeds(seeds, "cpu"))
    assert torch.equal(got, same)
    chain = build_process(RESSHIFT)
    got = chain.sample(StandIn(), ("resshift", 3), noise, extra(), samplers.generators_from_seeds(seeds, "cpu"), y0)
    same = resshift.sample_resshift(StandIn(), chain.schedule, y0, noise, 3, extra(),
                                    samplers.generators_from_seeds(seeds, "cpu"))
    assert torch.equal(got, same)
    other = resshift.sample_resshift(StandIn(), chain.schedule, y0, noise, 4, extra(),
                                     samplers.generators_from_seeds(seeds, "cpu"))
    assert not torch.equal(got, other)


@pytest.mark.parametrize("cfg, sampler", [(DiffusionConfig(timesteps=20), ("ddpm", 3)), (RESSHIFT, ("resshift", 3))])
def test_sampling_shows_a_progress_bar_only_when_asked(cfg, sampler, capsys):
    process = build_process(cfg)
    process.sample(StandIn(), sampler, images(5), extra(), None, images(6))
    assert capsys.readouterr().err == ""
    process.sample(StandIn(), sampler, images(5), extra(), None, images(6), progress=True)
    assert "3/3" in capsys.readouterr().err


@pytest.mark.parametrize("cfg, mode, starts_from_input", [
    (DiffusionConfig(timesteps=20), "bilinear", False),
    (DiffusionConfig(timesteps=20, data_range="unit"), "bilinear", False),
    (RESSHIFT, "bicubic", True),
    (DiffusionConfig(process="regression", timesteps=1, prediction="residual"), "bicubic", True),
])
def test_each_process_builds_the_condition_and_start_of_a_super_resolution_stage(cfg, mode, starts_from_input):
    """The condition is the low-res image in the process's range, upsampled by the process's mode and noised at the
    level; y_0, where the chain starts from it, is the clean upsampled image."""
    low, noise, level = images(7, side=4), images(8), torch.tensor([0.0, 0.3, 0.6])
    extra_args, y0 = build_process(cfg).condition(low, 8, level, noise)
    low = (low + 1) / 2 if cfg.data_range == "unit" else low
    upsampled = F.interpolate(low, size=(8, 8), mode=mode, align_corners=False)
    upsampled = upsampled.clamp(-1, 1) if mode == "bicubic" else upsampled
    scale = level.view(-1, 1, 1, 1)
    torch.testing.assert_close(extra_args["cond"], (1 - scale**2).sqrt() * upsampled + scale * noise)
    assert torch.equal(extra_args["aug_level"], level)
    if starts_from_input:
        torch.testing.assert_close(y0, upsampled)
    else:
        assert y0 is None


def test_a_sampler_the_process_cannot_run_is_refused_naming_the_parameter():
    ddpm, regression = DiffusionConfig(timesteps=20), DiffusionConfig(process="regression", timesteps=1)
    refusals = [
        (ddpm, ("resshift", 4), "sampler", "a ddpm stage samples with ddpm, ddpm_large, ddim, dpmpp, dpmpp_sde, not "
                                           "'resshift'"),
        (ddpm, ("ddim", 21), "steps", None),
        (ddpm, ("ddim", 3), "steps", None),  # DDIM's steps must divide T
        (RESSHIFT, ("ddim", 4), "sampler", "a resshift stage samples with resshift, not 'ddim'"),
        (regression, ("resshift", 1), "sampler", "a regression stage samples with regression, not 'resshift'"),
        (regression, ("regression", 7), "steps", "steps=7 must be between 1 and the schedule's T=1"),
        (RESSHIFT, ("resshift", 0), "steps", "steps=0 must be between 1 and the schedule's T=5"),
        (RESSHIFT, ("resshift", 6), "steps", "steps=6 must be between 1 and the schedule's T=5"),
    ]
    for cfg, sampler, parameter, message in refusals:
        with pytest.raises(MRNetError) as error:
            process_class(cfg.process).check_sampler(cfg, sampler)
        assert error.value.parameter == parameter
        assert message is None or str(error.value) == message
    for cfg, sampler in ((RESSHIFT, ("resshift", 1)), (RESSHIFT, ("resshift", 5)), (regression, ("regression", 1)),
                         (ddpm, ("ddim", 4)), (ddpm, ("dpmpp_sde", 20))):
        process_class(cfg.process).check_sampler(cfg, sampler)


@pytest.mark.parametrize("cfg, message", [
    (DiffusionConfig(process="flow"), "process must be one of ddpm, resshift, regression, distilled, not 'flow'"),
    (DiffusionConfig(prediction="residual"), "prediction must be one of epsilon, v for process 'ddpm', not 'residual'"),
    (DiffusionConfig(process="resshift", timesteps=4), "prediction must be one of residual, x0 for process 'resshift'"),
    (DiffusionConfig(timesteps=1), "timesteps=1 does not suit process 'ddpm' (at least 2)"),
    (DiffusionConfig(process="regression", timesteps=2, prediction="x0"), "does not suit process 'regression' (exactly 1)"),
    (DiffusionConfig(process="resshift", timesteps=4, prediction="x0", data_range="unit"),
     "process 'resshift' works in data_range 'symmetric', not 'unit'"),
])
def test_each_process_checks_its_own_settings(cfg, message):
    with pytest.raises(MRNetError, match=re.escape(message)):
        cfg.validate()


# A process name compared with ==, != or `in`, or used as a key of a table of per-process facts.
NAME = r"[\"'](ddpm|resshift|regression|distilled)[\"']"
NAME_BRANCH = rf"[!=]=\s*{NAME}|{NAME}\s*[!=]=|\bin\s*\(\s*{NAME}|{NAME}\s*:\s*[\"'\d]|OWN_SAMPLER|UPSAMPLING"


def test_no_module_outside_the_processes_branches_on_a_process_name():
    """Training, the pipeline, the command line, the study and the benchmarks ask the process (DESIGN.md, "Processes")."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [*root.glob("mrnet_utils/**/*.py"), *root.glob("benchmarks/*.py"), *root.glob("scripts/*.py")]:
        if "processes" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(NAME_BRANCH, line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
    assert re.search(NAME_BRANCH, 'if cfg.process == "ddpm":') and re.search(NAME_BRANCH, '{"resshift": "bicubic"}')


class Flow(Process):
    """A toy fourth process, defined here as a user would add one: rectified flow (Liu et al. 2022),
    x_s = (1 - s) x_0 + s epsilon with s = (t + 1) / T, the network predicting the velocity epsilon - x_0,
    sampled by Euler steps from pure noise."""

    name = "flow"
    predictions = ("velocity",)
    samplers = ("euler",)
    starts_from_input = False
    switch_settings = {"timesteps": 10, "prediction": "velocity"}

    @classmethod
    def check_timesteps(cls, timesteps: int) -> None:
        if timesteps < 1:
            raise MRNetError("a flow needs at least one step")

    @staticmethod
    def build_schedule(cfg, device) -> None:
        return None

    def loss(self, model, x0, t, noise, extra_args: dict[str, Any], y0) -> torch.Tensor:
        s = ((t + 1).float() / self.cfg.timesteps).view(-1, 1, 1, 1)
        velocity = model((1 - s) * x0 + s * noise, t, **extra_args)
        return (velocity.float() - (noise - x0)).square().mean(dim=(1, 2, 3))

    @torch.inference_mode()
    def sample(self, model, sampler, noise, extra_args, generators, y0, progress: bool = False) -> torch.Tensor:
        x, steps, T = noise, sampler[1], self.cfg.timesteps
        times = [round(T * (steps - k) / steps) - 1 for k in range(steps)] + [-1]
        for t, after in zip(times[:-1], times[1:]):
            velocity = model(x, torch.full((len(x),), t, dtype=torch.long, device=x.device), **extra_args)
            x = x - (t - after) / T * velocity.to(x.dtype)
        return x.clamp(-1, 1)


@pytest.fixture
def with_a_flow_process(monkeypatch):
    monkeypatch.setitem(PROCESSES, "flow", Flow)


def test_a_new_process_is_one_class_and_one_registry_entry(with_a_flow_process, tiny_cache, tmp_path):
    """The toy flow trains through the real loop (checkpoint, resume), loads from its checkpoint alone and samples
    through the pipeline, first stage of a cascade, with its own sampler as its default."""
    from mrnet_utils.pipeline import TrainedStage, sample_cascade
    from mrnet_utils.presets import default_sampler, stage_config
    from mrnet_utils.training.checkpoint import load_stage
    from mrnet_utils.training.loop import train

    cfg = stage_config("base64", "smoke", process="flow")
    assert (cfg.diffusion.process, cfg.diffusion.timesteps, cfg.name) == ("flow", 10, "base64_swin")
    assert default_sampler(cfg, quick=True) == ("euler", 10)  # the preset's dpmpp_sde is not a flow's sampler
    result = train(cfg.replace(train={"steps": 3}), tiny_cache, tmp_path / "flow", progress=False, grids=False)
    resumed = train(cfg.replace(train={"steps": 4}), tiny_cache, tmp_path / "flow", resume=True, progress=False,
                    grids=False)
    assert (result.steps, resumed.steps, resumed.trained_steps) == (3, 4, 1)
    base = load_stage(resumed.checkpoint)
    assert base.config.diffusion.process == "flow"
    untrained = {name: stage_config(name, "smoke") for name in ("sr1", "sr2")}
    from mrnet_utils.networks import build_network

    stages = [base] + [TrainedStage(build_network(c.unet).eval(), c, 0, None) for c in untrained.values()]
    images = sample_cascade(stages, [0, 1], progress=False)
    assert images[64].shape == (2, 1, 64, 64) and images[256].shape == (2, 1, 256, 256)
    assert torch.isfinite(images[256]).all() and images[64].std() > 0
    again = sample_cascade(stages, [0, 1], {"base64": ("euler", 3)}, progress=False)
    assert not torch.equal(again[64], images[64])  # the named step count reached the flow's sampler
    with pytest.raises(MRNetError, match="a flow stage samples with euler, not 'ddpm'"):
        sample_cascade(stages, [0], {"base64": ("ddpm", 3)}, progress=False)
