"""Progressive distillation (diffusion/processes/distilled.py, training/distill.py): its one-step target by hand on
a four-step schedule, its DDIM against diffusers' DDIMScheduler, and a distilled generator that trains round by
round through the real loop, resumes bit for bit, rebuilds from its checkpoint alone and samples in a cascade."""

import math

import pytest
import torch
from diffusers import DDIMScheduler

from mrnet_utils import cli
from mrnet_utils.config import DiffusionConfig
from mrnet_utils.diffusion import samplers
from mrnet_utils.diffusion.processes import build_process, distilled
from mrnet_utils.diffusion.schedules import NoiseSchedule
from mrnet_utils.errors import MRNetError
from mrnet_utils.pipeline import TrainedStage, sample_cascade, sample_stage
from mrnet_utils.presets import default_sampler, stage_config
from mrnet_utils.training import checkpoint
from mrnet_utils.training.distill import distill, rounds
from mrnet_utils.training.loop import train


def config(**changes) -> DiffusionConfig:
    settings = dict(process="distilled", timesteps=4, schedule="cosine", prediction="v", distilled_steps=1,
                    distilled_from=2)
    return DiffusionConfig(**{**settings, **changes})


class Linear:
    """A stand-in network: output = c x_t, whatever t; records the timesteps it was called at."""

    def __init__(self, c: float) -> None:
        self.c, self.times = c, []

    def __call__(self, x, t, **extra):
        self.times.append(t.tolist())
        return self.c * x


class Stage:
    """What `Distilled.teacher` holds: a network and its config's prediction."""

    def __init__(self, model, prediction: str) -> None:
        self.model = model
        self.config = type("Config", (), {"diffusion": DiffusionConfig(prediction=prediction)})()


@pytest.mark.parametrize("prediction", ["v", "epsilon"])
def test_the_one_step_target_by_hand(prediction):
    """T = 4, a student of one step: it steps at t = 3 to the clean image, its teacher at 3 and 1. With a teacher
    whose output is 0.5 x_t, the target is the teacher's second estimate of x_0, written out below in scalars."""
    process = build_process(config())
    process.__dict__["teacher"] = Stage(Linear(0.5), prediction)
    abar = NoiseSchedule.from_config(config()).alphas_cumprod.tolist()
    a3, s3, a1, s1 = math.sqrt(abar[3]), math.sqrt(1 - abar[3]), math.sqrt(abar[1]), math.sqrt(1 - abar[1])
    x0, noise = torch.full((1, 1, 2, 2), 0.6), torch.full((1, 1, 2, 2), -1.3)
    t, x_t, target = process.target(x0, torch.tensor([2]), noise, {})

    def estimate(x, a, s):  # the teacher's x_0 from its output 0.5 x
        return a * x - s * 0.5 * x if prediction == "v" else (x - s * 0.5 * x) / a

    z3 = a3 * 0.6 + s3 * -1.3
    z1 = a1 * estimate(z3, a3, s3) + s1 / s3 * (z3 - a3 * estimate(z3, a3, s3))
    assert t.tolist() == [3] and process.teacher.model.times == [[3], [1]]
    torch.testing.assert_close(x_t, torch.full_like(x0, z3))
    torch.testing.assert_close(target, torch.full_like(x0, estimate(z1, a1, s1)))


def test_the_two_step_target_by_hand_and_the_truncated_snr_loss():
    """T = 4, a student of two steps at t = 3 and 1, its teacher at 3, 2, 1, 0. The batch's timestep 1 picks the
    student's first step: from 3 to 1 through 2; the target is the x~ whose DDIM step from 3 lands where the
    teacher's two do (Algorithm 2), and the loss weighs its squared error by max(SNR_3, 1)."""
    process = build_process(config(distilled_steps=2, distilled_from=4))
    process.__dict__["teacher"] = Stage(Linear(-0.4), "v")
    abar = NoiseSchedule.from_config(config()).alphas_cumprod.tolist()
    a = [math.sqrt(value) for value in abar]
    s = [math.sqrt(1 - value) for value in abar]
    x0, noise = torch.full((1, 1, 2, 2), -0.2), torch.full((1, 1, 2, 2), 0.7)
    t, x_t, target = process.target(x0, torch.tensor([1]), noise, {})
    z3 = a[3] * -0.2 + s[3] * 0.7
    x3 = a[3] * z3 + s[3] * 0.4 * z3
    z2 = a[2] * x3 + s[2] / s[3] * (z3 - a[3] * x3)
    x2 = a[2] * z2 + s[2] * 0.4 * z2
    z1 = a[1] * x2 + s[1] / s[2] * (z2 - a[2] * x2)
    by_hand = (z1 - s[1] / s[3] * z3) / (a[1] - s[1] / s[3] * a[3])
    assert t.tolist() == [3] and process.teacher.model.times == [[3], [2]]
    torch.testing.assert_close(target, torch.full_like(x0, by_hand))
    # one DDIM step of the student from z_3 with x_0 = x~ lands on the teacher's z_1
    landed = distilled.ddim_step(process.schedule, x_t, target, t, torch.tensor([1]))
    torch.testing.assert_close(landed, torch.full_like(x0, z1))
    student = Linear(0.3)  # its estimate a_3 z_3 - s_3 0.3 z_3
    loss = process.loss(student, x0, torch.tensor([1]), noise, {}, None)
    error = a[3] * z3 - s[3] * 0.3 * z3 - by_hand
    torch.testing.assert_close(loss, torch.tensor([max(abar[3] / (1 - abar[3]), 1.0) * error**2]))


def test_a_teacher_that_predicts_one_image_gives_that_image_as_the_target():
    """DDIM with a fixed x_0 estimate is exact: two teacher steps land where one step with that x_0 does."""
    process = build_process(config(timesteps=1000, distilled_steps=4, distilled_from=8))
    image = torch.rand(3, 1, 8, 8) * 2 - 1

    class Fixed:  # predicts v such that x_0-hat = image at every step
        def __call__(self, x, t, **extra):
            alpha, sigma = distilled.alpha_sigma_at(process.schedule, t, x)
            return (alpha * x - image) / sigma

    process.__dict__["teacher"] = Stage(Fixed(), "v")
    _, _, target = process.target(torch.zeros_like(image), torch.tensor([0, 400, 999]), torch.randn_like(image), {})
    torch.testing.assert_close(target, image, atol=1e-4, rtol=1e-4)


def test_the_student_samples_with_diffusers_ddim_on_its_trailing_grid():
    """Four steps of T = 1000 divide T, so diffusers' DDIMScheduler takes the same trailing timesteps: the student's
    sampler and the project's DDIM sampler (DDIMScheduler.step) agree, evaluation for evaluation."""
    cfg = config(timesteps=1000, distilled_steps=4, distilled_from=8)
    process, noise = build_process(cfg), torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours, theirs = Linear(0.7), Linear(0.7)
    got = process.sample(ours, ("ddim", 4), noise, {}, None, None)
    expected = samplers.sample("ddim", theirs, process.schedule, noise, 4)
    assert ours.times == theirs.times == [[t] * 2 for t in (999, 749, 499, 249)]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert isinstance(samplers.SAMPLERS["ddim"].scheduler(process.schedule, 4), DDIMScheduler)


def test_each_round_halves_the_steps_and_the_teachers_grid_holds_the_students():
    cfg = stage_config("base64", "smoke", process="distilled").with_settings(
        {"diffusion.distilled_from": 32, "diffusion.distilled_steps": 4})
    assert rounds(cfg) == [16, 8, 4]
    for steps in (1, 2, 3, 5, 16, 125):
        student, teacher = distilled.step_grid(1000, steps), distilled.step_grid(1000, 2 * steps)
        assert teacher[::2] == student and student[-1] == distilled.CLEAN


@pytest.mark.parametrize("changes, message", [
    (dict(distilled_steps=0), "distilled_steps=0 must be at least 1"),
    (dict(distilled_steps=4, distilled_from=12), "distilled_from=12 must be distilled_steps=4 times a power of two"),
    (dict(distilled_steps=4, distilled_from=4), "at least twice it"),
    (dict(distilled_steps=4, distilled_from=8, timesteps=6), "at most timesteps=6"),
    (dict(prediction="epsilon"), "prediction must be one of v for process 'distilled'"),
])
def test_distillation_settings_are_checked(changes, message):
    with pytest.raises(MRNetError, match=message):
        config(**changes).validate()


def test_a_student_samples_in_exactly_its_own_steps():
    cfg = config(timesteps=100, distilled_steps=4, distilled_from=8)
    assert distilled.Distilled.default_sampler(cfg) == ("ddim", 4)
    with pytest.raises(MRNetError, match="a student distilled to 4 steps samples in exactly that many, not 8") as error:
        distilled.Distilled.check_sampler(cfg, ("ddim", 8))
    assert error.value.parameter == "steps"
    with pytest.raises(MRNetError, match="a distilled stage samples with ddim, not 'ddpm'"):
        distilled.Distilled.check_sampler(cfg, ("ddpm", 4))


@pytest.fixture(scope="module")
def teacher(tiny_cache, tmp_path_factory):
    """A smoke base64 run with v-prediction, as the project's presets train it."""
    cfg = stage_config("base64", "smoke").with_settings({"diffusion.prediction": "v", "train.steps": 2})
    folder = tmp_path_factory.mktemp("teacher") / "base64_swin"
    train(cfg, tiny_cache, folder, progress=False, grids=False)
    return folder


def student_config(steps: int = 2, **settings):
    return stage_config("base64", "smoke", process="distilled").with_settings(
        {"diffusion.distilled_from": 8, "diffusion.distilled_steps": 2, "train.steps": steps, **settings})


def test_a_distilled_generator_trains_round_by_round_and_rebuilds_from_its_checkpoint(teacher, tiny_cache, tmp_path):
    out = tmp_path / "base64_swin_distilled"
    first, last = distill(student_config(), teacher, tiny_cache, out, progress=False, grids=False)
    assert first.checkpoint == out / "rounds" / "steps_0004" / "final.pt" and last.checkpoint == out / "final.pt"
    # each round names its teacher: the stage's run, then the round before
    configs = [checkpoint.rebuild_config(checkpoint.load_checkpoint(r.checkpoint)) for r in (first, last)]
    assert [c.diffusion.teacher for c in configs] == [str((teacher / "final.pt").resolve()), str(first.checkpoint)]
    assert [c.diffusion.distilled_steps for c in configs] == [4, 2] and configs[1].name == "base64_swin_distilled"
    # the first round's student starts as its teacher's (EMA) weights
    teacher_weights = checkpoint.load_stage(teacher).model.state_dict()
    student = build_process(configs[0].diffusion, load_run=checkpoint.load_stage)
    assert all(torch.equal(a, b) for a, b in zip(student.initial_weights().values(), teacher_weights.values()))
    # rebuilt from its checkpoint alone (its teacher is not needed): 2 DDIM steps, every image its own seed's
    generator = checkpoint.load_stage(out)
    assert default_sampler(generator.config) == ("ddim", 2)
    calls = []
    counted = lambda x, t, **extra: calls.append(len(x)) or generator.model(x, t, **extra)  # noqa: E731
    counted.parameters = generator.model.parameters
    images = sample_stage(counted, generator.config, [0, 1, 2], batch_size=2, progress=False)
    assert calls == [2, 2, 1, 1] and images.shape == (3, 1, 64, 64) and torch.isfinite(images).all()
    alone = sample_stage(generator.model, generator.config, [2], progress=False)
    torch.testing.assert_close(alone, images[2:], atol=1e-5, rtol=1e-5)
    # the first stage of a cascade
    sr = [stage_config(name, "smoke") for name in ("sr1", "sr2")]
    from mrnet_utils.networks import build_network

    stages = [generator] + [TrainedStage(build_network(c.unet).eval(), c, 0, None) for c in sr]
    cascade = sample_cascade(stages, [0, 1], progress=False)
    torch.testing.assert_close(cascade[64], images[:2], atol=1e-5, rtol=1e-5)
    # a second call trains nothing: every round is complete
    again = distill(student_config(), teacher, tiny_cache, out, progress=False, grids=False)
    assert [r.trained_steps for r in again] == [0, 0]


def test_a_stopped_distillation_resumes_bit_for_bit(teacher, tiny_cache, tmp_path):
    """One round, two steps and then two more (a finished run extended, as a stopped one continues from its
    checkpoint), gives the weights of four straight: the teacher's targets do not depend on when they are drawn."""
    one_round = {"diffusion.distilled_from": 4}
    straight = distill(student_config(4, **one_round), teacher, tiny_cache, tmp_path / "straight", progress=False,
                       grids=False)
    distill(student_config(2, **one_round), teacher, tiny_cache, tmp_path / "resumed", progress=False, grids=False)
    resumed = distill(student_config(4, **one_round), teacher, tiny_cache, tmp_path / "resumed", progress=False,
                      grids=False)
    assert [r.trained_steps for r in resumed] == [2]
    weights = [checkpoint.load_checkpoint(r[0].checkpoint) for r in (straight, resumed)]
    for part in ("model", "ema"):
        assert all(torch.equal(a, b) for a, b in zip(weights[0][part].values(), weights[1][part].values()))


def test_distill_on_the_command_line_takes_the_teachers_stage_and_preset(teacher, tiny_cache, tmp_path, capsys):
    out = tmp_path / "base64_swin_distilled"
    argv = ["distill", "--teacher", str(teacher), "--data", str(tiny_cache), "--out", str(out), "--steps", "1",
            "--from-steps", "4", "--set", "train.steps=1", "--no-grids", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    assert "distilled base64_swin (smoke) to 1 steps" in capsys.readouterr().out
    generator = checkpoint.load_stage(out)
    assert (generator.config.diffusion.distilled_steps, generator.config.train.steps) == (1, 1)
    assert sorted(p.name for p in (out / "rounds").iterdir()) == ["steps_0002"]
    assert cli.main(["distill", "--teacher", str(tmp_path / "none"), "--data", str(tiny_cache), "--out",
                     str(out)]) == 2
    assert "no teacher checkpoint at" in capsys.readouterr().err


def test_a_teacher_of_another_schedule_or_steps_is_refused(teacher, tiny_cache, tmp_path):
    other = student_config().replace(diffusion={"teacher": str(teacher), "distilled_steps": 4, "schedule": "cosine"})
    with pytest.raises(MRNetError, match="has other schedule than its student"):
        build_process(other.diffusion, load_run=checkpoint.load_stage).initial_weights()
    first = distill(student_config(), teacher, tiny_cache, tmp_path / "run", progress=False, grids=False)[0]
    wrong = student_config().replace(diffusion={"teacher": str(first.checkpoint), "distilled_steps": 1})
    with pytest.raises(MRNetError, match="samples in 4 steps; a student of 1 steps learns from one of twice as many"):
        build_process(wrong.diffusion, load_run=checkpoint.load_stage).initial_weights()
    with pytest.raises(MRNetError, match="set diffusion.teacher"):
        build_process(student_config().diffusion, load_run=checkpoint.load_stage).initial_weights()
    # the diffusion layer never loads a run itself: without the training layer's loader it says so
    with pytest.raises(MRNetError, match="build its process with load_run=training.checkpoint.load_stage"):
        build_process(other.diffusion).initial_weights()


def test_the_study_trains_a_distilled_run_from_its_teacher_and_counts_its_whole_training_time(teacher, tiny_cache,
                                                                                              tmp_path):
    from mrnet_utils.study.training import train_stage
    from mrnet_utils.training.distill import lineage_seconds

    run_dir = tmp_path / "base64_swin_distilled"
    with pytest.raises(MRNetError, match="base64_swin_distilled learns from a trained run of its stage"):
        train_stage(student_config(), tiny_cache, run_dir, progress=False)
    first = train_stage(student_config(), tiny_cache, run_dir, progress=False, teacher=teacher)
    again = train_stage(student_config(), tiny_cache, run_dir, progress=False, teacher=teacher)
    assert (first.trained, first.steps, again.trained) == (True, 2, False)
    rounds = [run_dir / "rounds" / "steps_0004" / "final.pt", run_dir / "final.pt", teacher / "final.pt"]
    seconds = [checkpoint.load_checkpoint(path)["log"]["seconds"] for path in rounds]
    assert first.seconds == pytest.approx(sum(seconds[:2]), abs=0.1) == again.seconds
    assert lineage_seconds(run_dir / "final.pt") == pytest.approx(sum(seconds))
    assert lineage_seconds(teacher / "final.pt") == pytest.approx(seconds[2])
