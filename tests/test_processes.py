"""The three processes behind one interface: each dispatches to its own schedule, loss and sampler with every
argument it was given, and refuses a sampler or step count it cannot run, naming the parameter.

A stand-in network (a fixed function of its inputs that records what it was called with) keeps these fast
and makes the regression baseline's loss and output computable by hand.
"""

import math

import pytest
import torch

from mrnet_utils.config import DiffusionConfig
from mrnet_utils.diffusion import losses, processes, resshift, samplers
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
    schedule = processes.build_schedule(ddpm)
    assert isinstance(schedule, NoiseSchedule) and schedule.prediction == "v" and schedule.betas.device.type == "cpu"
    assert torch.equal(schedule.betas, NoiseSchedule.from_config(ddpm).betas)
    chain = processes.build_schedule(RESSHIFT)
    assert chain.kappa == 1.5 and chain.prediction == "x0" and len(chain.etas) == 5
    # ResShift's eq. 10-11: eta_1 = min((0.04 / kappa)^2, 0.001), and log(eta_t / eta_1) grows as ((t - 1) / (T - 1))^p
    assert math.isclose(float(chain.etas[0]), (0.04 / 1.5) ** 2)
    shape = torch.log(chain.etas / chain.etas[0]) / math.log(float(chain.etas[-1] / chain.etas[0]))
    torch.testing.assert_close(shape, (torch.arange(5, dtype=torch.float64) / 4) ** 0.7)
    assert processes.build_schedule(DiffusionConfig(process="regression", timesteps=1, prediction="residual")) is None


def test_ddpm_and_resshift_losses_are_their_modules_losses_with_every_setting():
    x0, noise, t = images(1), images(2), torch.tensor([0, 3, 4])
    ddpm = DiffusionConfig(timesteps=5, min_snr_gamma=5.0)
    schedule = processes.build_schedule(ddpm)
    got = processes.loss(StandIn(), ddpm, schedule, x0, t, noise, extra())
    assert torch.equal(got, losses.diffusion_loss(StandIn(), schedule, x0, t, noise, 5.0, extra()))
    assert not torch.allclose(got, losses.diffusion_loss(StandIn(), schedule, x0, t, noise, 0.0, extra()))
    chain, y0 = processes.build_schedule(RESSHIFT), images(3)
    got = processes.loss(StandIn(), RESSHIFT, chain, x0, t, noise, extra(), y0)
    assert got.shape == (3,)
    assert torch.equal(got, resshift.resshift_loss(StandIn(), chain, x0, y0, t, noise, extra(), "l1"))
    assert not torch.allclose(got, resshift.resshift_loss(StandIn(), chain, x0, y0, t, noise, extra(), "l2"))


@pytest.mark.parametrize("prediction, loss", [("residual", "l2"), ("residual", "l1"), ("x0", "l2")])
def test_the_regression_loss_by_hand(prediction, loss):
    """A network that outputs the constant 0.3 at y_0 = 0.25: x_0-hat is 0.55 (residual) or 0.3 (x0), and each
    sample's loss is its one squared or absolute error, whatever the image size."""
    cfg = DiffusionConfig(process="regression", timesteps=1, prediction=prediction, loss=loss)
    targets = torch.tensor([-0.5, 0.0, 0.9])
    x0 = targets.view(3, 1, 1, 1).expand(3, 1, 8, 8).clone()
    network = StandIn(scale=0.0, shift=0.3)
    got = processes.loss(network, cfg, None, x0, torch.tensor([7, 7, 7]), images(2), {}, torch.full_like(x0, 0.25))
    error = (0.55 if prediction == "residual" else 0.3) - targets
    torch.testing.assert_close(got, error.square() if loss == "l2" else error.abs())
    t = network.calls[0]["t"]
    assert t.dtype == torch.long and torch.equal(t, torch.zeros(3, dtype=torch.long))  # one pass at t = 0


def test_the_regression_baseline_outputs_its_prediction_clamped_to_the_data_range():
    cfg = DiffusionConfig(process="regression", timesteps=1, prediction="residual")
    y0, network = images(4), StandIn(scale=3.0, shift=0.2, dtype=torch.float64)
    got = processes.generate(network, cfg, None, ("regression", 1), y0, extra(), None, y0)
    assert got.dtype == y0.dtype  # the network's output is taken in the images' dtype
    hand = y0 + 3.0 * y0 + 0.2 + 0.1 * extra()["cond"]
    assert hand.max() > 1 and hand.min() < -1  # both bounds matter
    torch.testing.assert_close(got, hand.clamp(-1, 1))
    assert torch.equal(network.calls[0]["cond"], extra()["cond"]) and torch.equal(network.calls[0]["aug_level"],
                                                                                   extra()["aug_level"])


def test_ddpm_and_resshift_sample_with_their_modules_samplers_steps_and_generators():
    noise, y0 = images(5), images(6)
    ddpm = DiffusionConfig(timesteps=20)
    schedule = processes.build_schedule(ddpm)
    seeds = [3, 4, 5]
    got = processes.generate(StandIn(), ddpm, schedule, ("ddpm", 4), noise, extra(),
                             samplers.generators_from_seeds(seeds, "cpu"))
    same = samplers.sample("ddpm", StandIn(), schedule, noise, 4, extra_args=extra(),
                           generators=samplers.generators_from_seeds(seeds, "cpu"))
    assert torch.equal(got, same)
    chain = processes.build_schedule(RESSHIFT)
    got = processes.generate(StandIn(), RESSHIFT, chain, ("resshift", 3), noise, extra(),
                             samplers.generators_from_seeds(seeds, "cpu"), y0)
    same = resshift.sample_resshift(StandIn(), chain, y0, noise, 3, extra(), samplers.generators_from_seeds(seeds, "cpu"))
    assert torch.equal(got, same)
    other = resshift.sample_resshift(StandIn(), chain, y0, noise, 4, extra(), samplers.generators_from_seeds(seeds, "cpu"))
    assert not torch.equal(got, other)


@pytest.mark.parametrize("cfg, sampler", [(DiffusionConfig(timesteps=20), ("ddpm", 3)), (RESSHIFT, ("resshift", 3))])
def test_generate_shows_a_progress_bar_only_when_asked(cfg, sampler, capsys):
    schedule = processes.build_schedule(cfg)
    processes.generate(StandIn(), cfg, schedule, sampler, images(5), extra(), None, images(6))
    assert capsys.readouterr().err == ""
    processes.generate(StandIn(), cfg, schedule, sampler, images(5), extra(), None, images(6), progress=True)
    assert "3/3" in capsys.readouterr().err


def test_a_sampler_the_process_cannot_run_is_refused_naming_the_parameter():
    ddpm, regression = DiffusionConfig(timesteps=20), DiffusionConfig(process="regression", timesteps=1)
    refusals = [
        (ddpm, ("resshift", 4), "sampler", "sampler 'resshift' samples a resshift stage; this stage's process is 'ddpm'"),
        (ddpm, ("ddim", 21), "steps", None),
        (RESSHIFT, ("ddim", 4), "sampler", "a resshift stage samples with 'resshift', not 'ddim'"),
        (regression, ("resshift", 1), "sampler", "a regression stage samples with 'regression', not 'resshift'"),
        (RESSHIFT, ("resshift", 0), "steps", "steps=0 must be between 1 and the schedule's T=5"),
        (RESSHIFT, ("resshift", 6), "steps", "steps=6 must be between 1 and the schedule's T=5"),
    ]
    for cfg, sampler, parameter, message in refusals:
        with pytest.raises(MRNetError) as error:
            processes.check_sampler(cfg, sampler)
        assert error.value.parameter == parameter
        assert message is None or str(error.value) == message
    for cfg, sampler in ((RESSHIFT, ("resshift", 1)), (RESSHIFT, ("resshift", 5)), (regression, ("regression", 7))):
        processes.check_sampler(cfg, sampler)  # the regression baseline's one pass takes any step count
