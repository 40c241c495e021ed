"""Presets build, round-trip through plain data, and refuse settings the network cannot take."""

import dataclasses
import re
from pathlib import Path

import pytest

from mrnet_utils.config import StageConfig
from mrnet_utils.presets import PRESETS, default_sampler, stage_config
from mrnet_utils.errors import MRNetError
from mrnet_utils.stages import STAGES
from mrnet_utils.study.layout import study_runs
from mrnet_utils.training.loop import steps_for_epochs


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_round_trips_through_plain_data(preset):
    for stage in STAGES:
        for use_swin in (True, False):
            cfg = stage_config(stage, preset, use_swin)
            assert StageConfig.from_dict(cfg.to_dict()) == cfg
            assert cfg.unet.use_swin is use_swin
            assert cfg.is_super_resolution == (stage in ("sr1", "sr2"))
            assert cfg.unet.cond_channels == (1 if cfg.is_super_resolution else 0)


def test_reference_preset_follows_the_notebooks():
    base = stage_config("base64", "reference")
    assert base.unet.channels == (64, 128, 256) and base.unet.bottleneck_channels == 512
    assert base.unet.bottleneck_resolution == 8 and base.unet.swin_heads == 8 and base.unet.swin_window == 4
    assert (base.diffusion.timesteps, base.diffusion.beta_start, base.diffusion.beta_end) == (2000, 0.00085, 0.012)
    assert (base.train.lr, base.train.weight_decay, base.train.batch_size, base.train.epochs) == (1e-4, 1e-2, 16, 600)
    assert stage_config("base64", "reference", use_swin=False).train.epochs == 400
    assert stage_config("sr1", "reference").unet.bottleneck_resolution == 16
    assert stage_config("sr2", "reference").unet.bottleneck_resolution == 32
    assert stage_config("sr2", "reference").diffusion.timesteps == 1000
    assert stage_config("sr2", "reference").train.lr == 5e-5
    assert not stage_config("sr2", "reference").conditioning.enabled  # the reference had no conditioning augmentation
    reference = PRESETS["reference"]
    assert (reference.samplers["sr1"], reference.study.selection, reference.study.normalisation) == (
        ("ddpm_large", None), "positives", "slice")


def test_full_preset_is_the_projects_recipe_at_the_references_scale():
    base, sr1 = stage_config("base64", "full"), stage_config("sr1", "full")
    assert sr1.unet.family == "project" and sr1.unet.channels == (64, 128, 256) and sr1.conditioning.enabled
    assert (base.diffusion.schedule, base.diffusion.prediction, base.train.ema_decay) == ("cosine", "v", 0.9999)
    assert (sr1.diffusion.process, sr1.diffusion.timesteps, sr1.diffusion.prediction) == ("resshift", 4, "residual")
    # no verdict on full checkpoints: each stage's own chain by default; the quick samplers for grids and the study
    assert default_sampler(base) == ("ddpm", 1000) and default_sampler(sr1) == ("resshift", 4)
    assert default_sampler(base, quick=True) == ("dpmpp_sde", 25) and default_sampler(sr1, quick=True) == ("resshift", 4)


def test_replace_changes_nested_fields_and_validates():
    cfg = stage_config("sr1", "smoke")
    longer = cfg.replace(train={"steps": 50})
    assert longer.train.steps == 50 and longer.unet == cfg.unet
    with pytest.raises(MRNetError, match="swin_window=3"):
        cfg.replace(unet={"swin_window": 3})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"unet": {"resolution": 100}}, "stage sr1 works at 128x128"),
        ({"unet": {"swin_window": 3}}, "does not divide the 16x16 bottleneck"),
        ({"unet": {"attention_resolutions": (8,)}}, "attention_resolutions holds 8"),
        ({"unet": {"norm_groups": 3}}, "not divisible by norm_groups=3"),
        ({"diffusion": {"prediction": "v"}}, "prediction must be one of residual, x0 for process 'resshift'"),
        ({"diffusion": {"process": "ddpm", "timesteps": 1, "prediction": "v"}}, "timesteps=1 does not suit process 'ddpm'"),
    ],
)
def test_invalid_settings_name_the_parameter(changes, message):
    with pytest.raises(MRNetError, match=message):
        stage_config("sr1", "smoke").replace(**changes)


def test_unknown_names_and_stale_configs_are_refused():
    with pytest.raises(MRNetError, match="unknown preset"):
        stage_config("base64", "huge")
    with pytest.raises(MRNetError, match="unknown stage"):
        stage_config("sr3", "smoke")
    stored = stage_config("base64", "smoke").to_dict()
    del stored["unet"]["channels"]
    with pytest.raises(MRNetError, match="not a StageConfig"):
        StageConfig.from_dict(stored)


def test_configs_of_checkpoints_from_before_the_stage_table_still_load():
    """Checkpoints written before 2026-11-30 stored the stage's sampler in its config; it is ignored now."""
    stored = stage_config("sr1", "demo").to_dict() | {"sampler": "dpmpp", "sample_steps": 20}
    assert StageConfig.from_dict(stored) == stage_config("sr1", "demo")


def test_residual_processes_are_for_super_resolution_and_the_baseline_is_a_named_process():
    with pytest.raises(MRNetError, match="process 'resshift' turns a low-res image into a high-res one"):
        stage_config("base64", "smoke").replace(diffusion={"process": "resshift", "timesteps": 4, "prediction": "residual"})
    baseline = stage_config("sr1", "demo", process="regression")
    assert (baseline.diffusion.process, baseline.diffusion.timesteps, baseline.name) == ("regression", 1, "sr1_swin_regression")
    assert baseline.train == stage_config("sr1", "demo").train and baseline.unet == stage_config("sr1", "demo").unet
    switched = stage_config("sr1", "demo", process="ddpm")  # an SR3-style stage: not a baseline, so not renamed
    assert (switched.diffusion.process, switched.diffusion.timesteps, switched.diffusion.prediction) == ("ddpm", 1000,
                                                                                                         "epsilon")
    assert switched.name == "sr1_swin" and switched.diffusion.kappa == stage_config("sr1", "demo").diffusion.kappa
    with pytest.raises(MRNetError, match="process must be one of ddpm, resshift, regression, distilled, not 'flow'"):
        stage_config("sr1", "demo", process="flow")


def test_gpu_preset_is_the_full_recipe_on_a_thirtieth_of_its_epochs():
    for stage in STAGES:
        gpu, full = stage_config(stage, "gpu"), stage_config(stage, "full")
        assert (gpu.unet, gpu.diffusion, gpu.conditioning) == (full.unet, full.diffusion, full.conditioning)
        assert gpu.train.epochs == full.train.steps // 475 // 30 and gpu.train.steps == gpu.train.epochs * 354
        assert (gpu.train.batch_size, gpu.train.lr, gpu.train.ema_decay, gpu.train.warmup_steps) == (16, 1e-4, 0.99, 50)
    assert [stage_config(stage, "gpu").train.epochs for stage in STAGES] == [20, 5, 5, 20]
    assert PRESETS["gpu"].study == dataclasses.replace(PRESETS["full"].study, samples=2048)
    assert PRESETS["gpu"].samplers == PRESETS["full"].samplers


def measured_h200_training_rates() -> dict[str, float]:
    """images/s per stage from benchmarks/RESULTS.md, "GPU check: NVIDIA H200", training throughput (eager)."""
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    section = text[text.index("## GPU check: NVIDIA H200 (CUDA 13.0)\n"):]
    table = section[section.index("### training throughput"):section.index("### sampling throughput")]
    rows = re.findall(r"^\| (\w+)_swin \| 16 \| eager \| ([\d.]+) \|", table, re.M)
    return {stage: float(rate) for stage, rate in rows}


def test_gpu_preset_trains_the_study_in_1_to_2_hours_on_an_a100_by_the_measured_throughput():
    """The arithmetic of presets.GPU and docs/multi_gpu.md, from the measured rates: 9 runs on MRNet's 5,650
    training slices take 33 min on the H200, 67-100 min on an A100 taken as 2-3x slower."""
    rates = measured_h200_training_rates()
    assert rates == {"base64": 403.5, "sr1": 436.5, "sr2": 148.6, "single256": 166.8}
    runs = [run for run in study_runs() if run[2] != "distilled"]  # no GPU throughput measured for distillation
    assert len(runs) == 9

    def h200_seconds(train_slices: int) -> float:
        total = 0.0
        for stage, use_swin, process in runs:
            cfg = steps_for_epochs(stage_config(stage, "gpu", use_swin, process), train_slices)
            total += cfg.train.steps * cfg.train.batch_size / rates[stage]
        return total

    mrnet = h200_seconds(1130 * 5)
    assert round(mrnet) == 2007
    assert 60 <= 2 * mrnet / 60 and 3 * mrnet / 60 <= 120  # minutes on an A100
    assert round(h200_seconds(80 * 5)) == 142 and round(h200_seconds(268)) == 96  # the phantom, the real sample
    doc = (Path(__file__).resolve().parents[1] / "docs" / "multi_gpu.md").read_text(encoding="utf-8")
    assert "| all | | | | | 9 | 2,007 (33 min) |" in doc and "**67-100 minutes on one A100**" in doc


def test_the_demo_single_stage_model_trains_with_the_compute_of_the_cascades_three_stages():
    """The generation table compares the cascade and single-stage 256 at equal training FLOPs (issue 29)."""
    from mrnet_utils.study.training import training_flops

    cascade = sum(training_flops(stage_config(stage, "demo")) for stage in ("base64", "sr1", "sr2"))
    single = training_flops(stage_config("single256", "demo"))
    assert abs(single / cascade - 1) < 0.005


def test_fid_is_reachable_in_the_gpu_full_and_reference_presets():
    from mrnet_utils.evaluation.tables import MIN_FID_SAMPLES, RECOMMENDED_FID_SAMPLES

    assert PRESETS["full"].study.samples == RECOMMENDED_FID_SAMPLES
    assert PRESETS["gpu"].study.samples >= MIN_FID_SAMPLES and PRESETS["reference"].study.samples >= MIN_FID_SAMPLES
