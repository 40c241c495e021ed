"""Mutation testing of the core modules with mutmut: how many planted one-line bugs the fast tests catch.

Not a test: a measurement of the tests, recorded per module in RESULTS.md ("Mutation testing: ...")
with its mutation score, every surviving mutant (its diff, and why it is left: an equivalent
mutant, or one not worth a test) and the machine and time it took.

Each module is mutated alone, against only the fast test files that cover it (`MODULES`), in a
scratch copy of the committed repository (HEAD) under `--work` (mutmut writes its `mutants/` tree next to the
code it mutates). mutmut 3 imports the code once, records which tests call each function,
then runs, for each mutant, only those tests in a process forked from a warm one (a fork
server here: torch is not fork-safe once it has run).

    python -m benchmarks.mutation                      # the default modules (about an hour on 2 busy cores)
    python -m benchmarks.mutation --modules schedules losses --max-children 2
    python -m benchmarks.mutation --modules loop_train --minutes 120 --resume   # continue a long run
    python -m benchmarks.mutation --modules loop_train --minutes 0 --resume     # rewrite its section from its saved state

A run saves its verdicts in `mutation_state/<module>.json` when it stops, so that `--resume` continues it
in another session or on another machine (mutmut keeps a verdict while its function's code is unchanged).

Needs mutmut (the `mutation` extra: pip install -e '.[mutation]').
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path

from benchmarks.sections import update_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass(frozen=True)
class Target:
    path: str  # the module, relative to the repository root
    tests: tuple[str, ...]  # test files or node ids that cover it, fast ones only
    # Surviving mutants judged not worth a test, by mutant name: why each is left.
    # Keys are mutmut 3.8's names ("<module>.x_<function>__mutmut_<n>"), stable while the function is unchanged.
    notes: dict[str, str] = field(default_factory=dict)
    # Only the mutants of these functions (mutmut's mangled names, "x_<function>" or "xǁ<Class>ǁ<method>"),
    # for a module whose whole run would not fit a session; empty: every function.
    functions: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return self.path + (f": {', '.join(f'`{f}`' for f in self.functions)}" if self.functions else "")

    def covers(self, mutant: str) -> bool:
        return not self.functions or _order(mutant)[0].rsplit(".", 1)[-1] in self.functions

    def killed_later(self, mutant: str) -> bool:
        """A survivor noted as killed by a test written after its run (`--recheck` runs it again)."""
        return self.notes.get(mutant, "").startswith(_KILLED_LATER)


# How a note begins that says a test written after the run kills the survivor: "killed by `test_...` (file), ...".
_KILLED_LATER = "killed by "
# The loop's tests, less the 1000-step sampler agreement (17 s a mutant, on 2 cores): a test of the samplers,
# measured there.
_LOOP_TESTS = ("tests/test_training.py", "tests/test_wiring.py", "tests/test_reliability.py", "tests/test_checkpoint.py",
               "tests/test_distributed.py", "--deselect=tests/test_training.py::"
               "test_the_base_models_default_sampler_agrees_with_ancestral_ddpm_over_all_1000_steps")
_DEVICE = "equivalent on the CPU: a device argument or move is a no-op when everything lives on the CPU (the GPU check runs it on CUDA)"

MODULES: dict[str, Target] = {
    "schedules": Target(
        "mrnet_utils/diffusion/schedules.py",
        ("tests/test_diffusion.py",),
        {
            "mrnet_utils.diffusion.schedules.x_alpha_sigma__mutmut_2": _DEVICE,
            "mrnet_utils.diffusion.schedules.x_snr__mutmut_2": _DEVICE,
        },
    ),
    "losses": Target(
        "mrnet_utils/diffusion/losses.py",
        ("tests/test_diffusion.py",),
        {
            **{f"mrnet_utils.diffusion.losses.x_{name}": _DEVICE for name in (
                "loss_weight__mutmut_6", "loss_weight__mutmut_9", "sample_timesteps__mutmut_1",
                "sample_timesteps__mutmut_2", "sample_timesteps__mutmut_9", "sample_timesteps__mutmut_14")},
            "mrnet_utils.diffusion.losses.x_sample_timesteps__mutmut_10":
                "equivalent: torch.randint(high, size) draws from [0, high), as randint(0, high, size) does",
        },
    ),
    "conditioning": Target(
        "mrnet_utils/diffusion/conditioning.py",
        ("tests/test_conditioning.py", "tests/test_wiring.py"),
        {
            **{f"mrnet_utils.diffusion.conditioning.x_{name}": _DEVICE for name in (
                "make_condition__mutmut_12", "make_condition__mutmut_15", "make_condition__mutmut_18",
                "make_condition__mutmut_20", "sample_aug_levels__mutmut_17", "sample_aug_levels__mutmut_20",
                *(f"sample_aug_levels__mutmut_{n}" for n in range(7, 14)))},
            **{f"mrnet_utils.diffusion.conditioning.x_upsample__mutmut_{n}":
               "equivalent: align_corners=None is False for the bilinear and bicubic modes" for n in (13, 17)},
        },
    ),
    "samplers": Target(
        "mrnet_utils/diffusion/samplers.py",
        ("tests/test_samplers.py",),
        {
            **{f"mrnet_utils.diffusion.samplers.x_{name}": why for names, why in (
                (("_ddim__mutmut_10", "_ddpm__mutmut_3", "_ddpm_large__mutmut_3", "_scheduler_args__mutmut_8"),
                 "equivalent: diffusers tests clip_sample and thresholding for truth, and None is false"),
                (("_ddim__mutmut_15", "_ddpm__mutmut_5", "_ddpm__mutmut_2", "_dpm_solver_2m__mutmut_7",
                  "_dpm_solver_2m__mutmut_8", "_scheduler_args__mutmut_12", "sample__mutmut_32"),
                 "equivalent: the argument it drops is diffusers' default (set_alpha_to_one=True, "
                 "variance_type='fixed_small', solver_order=2, final_sigmas_type='zero', thresholding=False, "
                 "DDIM's eta=0.0; diffusers 0.42); the project states them so that a change of default cannot move them"),
                (("_ddpm__mutmut_8", "_ddpm__mutmut_9"),
                 "equivalent: DDPMScheduler does not check variance_type, and an unknown name keeps the "
                 "posterior variance beta~_t, which is fixed_small"),
                (("_derived_seed__mutmut_10",),
                 "equivalent: numpy's SeedSequence hashes trailing zero words away, so (seed, stream, purpose, 0) "
                 "is (seed, stream, purpose)"),
                (("_derived_seed__mutmut_17",),
                 "equivalent: the first word of generate_state(2) is generate_state(1)'s"),
                (("_derived_seed__mutmut_15",),
                 "equivalent on the CPU: generate_state(1) as uint32 is the low word of the uint64 one, and "
                 "torch's CPU generator (mt19937) is seeded from the low 32 bits; CUDA's Philox uses all 64"),
                (("generators_from_seeds__mutmut_4", "noise_from_seeds__mutmut_18"), _DEVICE),
            ) for name in names},
        },
    ),
    "statistics": Target(
        "mrnet_utils/evaluation/statistics.py",
        ("tests/test_statistics.py",),
        {
            **{f"mrnet_utils.evaluation.statistics.x_{name}": why for names, why in (
                (("_clusters__mutmut_28", "_clusters__mutmut_34", "per_exam_means__mutmut_20",
                  "per_exam_means__mutmut_28"),
                 "equivalent: the bins are np.unique's inverse index, whose largest value is len(ids) - 1, "
                 "so minlength=len(ids) never pads"),
                (("_clusters__mutmut_30",), "equivalent: astype(None) is float64, as astype(float) is"),
                (("exam_bootstrap__mutmut_44",),
                 "equivalent: rng.integers(high, size) draws from [0, high), as integers(0, high, size) does"),
                (("exam_bootstrap__mutmut_84",),
                 "not worth a test: ddof 2 instead of 1 over 2000 bootstrap means changes the standard "
                 "error by a factor sqrt(1999 / 1998)"),
            ) for name in names},
        },
    ),
    "checkpoint": Target(
        "mrnet_utils/training/checkpoint.py",
        ("tests/test_checkpoint.py",),
        {
            **{f"mrnet_utils.training.checkpoint.x_{name}": why for names, why in (
                (("load_checkpoint__mutmut_9", "load_checkpoint__mutmut_12", "load_stage__mutmut_37"), _DEVICE),
                (("load_checkpoint__mutmut_38", "load_checkpoint__mutmut_39"),
                 "not worth a test: the wording for an unpickling error that names neither a global nor an "
                 "opcode, which no damaged or foreign file tried here produces"),
                (("load_checkpoint__mutmut_10", "load_checkpoint__mutmut_13"),
                 "equivalent on torch >= 2.6, whose torch.load defaults to weights_only=True (torch 2.14 here); "
                 "the explicit flag keeps older torch from unpickling code"),
                (("latest_checkpoint__mutmut_8", "latest_checkpoint__mutmut_9"),
                 "not worth a test: which frame a warning names (and mutmut's trampoline changes the frames)"),
                (("_remove_old_steps__mutmut_16", "_remove_old_steps__mutmut_17"),
                 "not worth a test: missing_ok matters only when another process deletes the file between the "
                 "listing and the unlink, and one process at a time writes a run folder"),
                (("_feed__mutmut_38",),
                 "equivalent: save and load hash alike, and the repr of each scalar a checkpoint holds already "
                 "tells its type apart (1, 1.0, True, '1')"),
            ) for name in names},
        },
    ),
    # Not in the default run (slower tests, or the hour was spent): run them with --modules.
    "batches": Target(
        "mrnet_utils/training/batches.py",
        ("tests/test_wiring.py",),
        {
            **{f"mrnet_utils.training.batches.x_{name}": why for names, why in (
                (("draw_batch__mutmut_88", "draw_batch__mutmut_94"),
                 "equivalent: < and <= differ only when a uniform float32 draw equals the dropout rate exactly "
                 "(a chance of about 2^-24 per draw)"),
                (("to_device__mutmut_2", "to_device__mutmut_4"), _DEVICE),
                (("to_device__mutmut_5", "to_device__mutmut_7"),
                 "equivalent on the CPU: a copy is non-blocking only from pinned host memory to a GPU"),
                (("to_device__mutmut_8", "to_device__mutmut_10"),
                 "equivalent: every image here has one channel, and a one-channel tensor's channels-last "
                 "layout is its standard one (torch ignores the stride of a size-1 dimension)"),
            ) for name in names},
        },
    ),
    "processes": Target(
        "mrnet_utils/diffusion/processes.py",
        ("tests/test_processes.py", "tests/test_stages.py", "tests/test_resshift.py", "tests/test_wiring.py"),
        {f"mrnet_utils.diffusion.processes.x_{name}": _DEVICE
         for name in ("build_schedule__mutmut_12", "regress__mutmut_4", "regress__mutmut_7")},
    ),
    "guidance": Target(
        "mrnet_utils/diffusion/guidance.py",
        ("tests/test_guidance.py",),
        {f"mrnet_utils.diffusion.guidance.xǁGuidedǁforward__mutmut_{n}":
         "equivalent for the project's UNet, which reads no labels as every label null (tested)" for n in (16, 19)},
    ),
    "resshift": Target(
        "mrnet_utils/diffusion/resshift.py",
        ("tests/test_resshift.py",),
        {
            **{f"mrnet_utils.diffusion.resshift.{name}": _DEVICE for name in (
                "x__per_sample__mutmut_5", "x_network_inputs__mutmut_16", "x__step_noise__mutmut_6",
                "x__step_noise__mutmut_10")},
            **{f"mrnet_utils.diffusion.resshift.x__step_noise__mutmut_{n}":
               "equivalent for the float32 chains the project runs: without a dtype, randn draws torch's default "
               "float32" for n in (7, 11)},
        },
    ),
    "metrics": Target(
        "mrnet_utils/evaluation/metrics.py",
        ("tests/test_metrics.py", "tests/test_evaluation.py"),
        {
            **{f"mrnet_utils.evaluation.metrics.xǁInceptionFeaturesǁ__init____mutmut_{n}":
               "equivalent: torch-fidelity keeps the network's name as a label (`get_name`, for its own caches), "
               "which the project never reads" for n in (9, 10)},
            **{f"mrnet_utils.evaluation.metrics.x_{name}": why for names, why in (
                (("psnr__mutmut_8",), "equivalent: torchmetrics reads reduction=None as 'none'"),
                (("ssim__mutmut_11", "ms_ssim__mutmut_26", "fsim__mutmut_12", "vif__mutmut_11"),
                 "equivalent: piq's default data_range is 1.0, the one passed (the explicit argument documents "
                 "the [0, 1] range; the 8-bit test pins it)"),
                (("ms_ssim__mutmut_25",), "equivalent: piq's default kernel_size is 11, MS_SSIM_KERNEL"),
                (("ms_ssim__mutmut_8", "radial_power_spectrum__mutmut_2", "radial_power_spectrum__mutmut_25",
                  "power_spectrum_distance__mutmut_3", "power_spectrum_distance__mutmut_6"),
                 "equivalent: on the 4-D images every metric takes (checked first), axis +2 is axis -2"),
                (("power_spectrum_distance__mutmut_10", "power_spectrum_distance__mutmut_13"),
                 "equivalent: on the 4-D images every metric takes (checked first), axis +2 is axis -2"),
                (("fid__mutmut_22", "kid__mutmut_25"), "equivalent: inception_features' default feature is '2048'"),
                (("radial_power_spectrum__mutmut_10",),
                 "equivalent: on 4-D images the dimensions (+2, -1) are (-2, -1)"),
                (("ms_ssim__mutmut_12", "ms_ssim__mutmut_15"),
                 "equivalent for the float32 images the project scores: torch.tensor's default dtype is float32"),
                (("ms_ssim__mutmut_13", "ms_ssim__mutmut_16", "load_lpips__mutmut_25", "load_lpips__mutmut_28",
                  "radial_power_spectrum__mutmut_49", "radial_power_spectrum__mutmut_71",
                  "radial_power_spectrum__mutmut_75"), _DEVICE),
                (("radial_power_spectrum__mutmut_87",),
                 "equivalent: dividing float64 sums by integer counts gives the same float64 quotient"),
                (("fsim__mutmut_9",), "equivalent: chromatic=None is falsy, as False is"),
                (("average_gradient_sobel__mutmut_15",),
                 "equivalent: scipy's sobel differentiates along axis -1 by default, axis 1 of a 2-D image"),
                (("spectrum_error__mutmut_10", "spectrum_error__mutmut_14"),
                 "not worth a test: -1e-12 instead of +1e-12 next to the power of any image that is not flat"),
                (("load_lpips__mutmut_11",),
                 "not worth a test: which warnings are silenced while lpips builds its network"),
                (("load_lpips__mutmut_17", "load_lpips__mutmut_20", "load_lpips__mutmut_22"),
                 "not worth a test: whether lpips prints a line while building its network"),
                (("load_lpips__mutmut_18",),
                 "equivalent for the study: lpips' default backbone is 'alex', the only one used"),
                (("load_lpips__mutmut_26", "load_lpips__mutmut_29"),
                 "equivalent on torch >= 2.6, whose torch.load defaults to weights_only=True (torch 2.14 here)"),
                (("load_lpips__mutmut_32",),
                 "not worth a test: a file of tensors loads alike; weights_only=True refuses code in a foreign file"),
                (("_to_rgb__mutmut_2",), "equivalent: expanding a 3-channel batch to 3 channels returns it unchanged"),
                (("interpolate__mutmut_47", "interpolate__mutmut_51"),
                 "equivalent: align_corners None (or omitted) is False for bilinear and bicubic"),
                (("diversity_ms_ssim__mutmut_9", "diversity_ms_ssim__mutmut_11", "diversity_ms_ssim__mutmut_13"),
                 "equivalent: the default groups are distinct ids either way, so every pair is kept"),
                (("diversity_ms_ssim__mutmut_28",),
                 "equivalent: drawing all pairs without replacement reorders them; the mean is the same"),
                (("diversity_ms_ssim__mutmut_32",), "equivalent: replace=None is falsy, as False is"),
                (("diversity_ms_ssim__mutmut_2",), "equivalent: the batch size only groups the pairs"),
                (("diversity_ms_ssim__mutmut_1", "diversity_ms_ssim__mutmut_3", "histogram_distance__mutmut_1"),
                 "not worth a test: another default (1001 pairs, seed 1, 257 bins) measures the same thing"),
                (("intensity_histograms__mutmut_9",), "equivalent: torch.histc's default min is 0"),
                (("histogram_w1__mutmut_3", "histogram_w1__mutmut_5"),
                 "equivalent: the Wasserstein-1 distance does not change when both histograms' centres move together"),
                (("radial_power_spectrum__mutmut_34", "radial_power_spectrum__mutmut_37"),
                 "equivalent: torch.meshgrid's default indexing is 'ij'"),
                (("radial_power_spectrum__mutmut_58",),
                 "equivalent: integer radii <= side / 2 are the radii <= side // 2"),
                (("fid__mutmut_1", "kid__mutmut_3", "inception_score__mutmut_2", "memorisation__mutmut_2"),
                 "equivalent: the batch size only groups the images"),
                (("fid__mutmut_27", "fid__mutmut_30", "fid__mutmut_33"),
                 "equivalent: torchmetrics reads input_img_size only to probe a network without num_features, and "
                 "every network here has it"),
                (("fid__mutmut_29", "fid__mutmut_31"),
                 "equivalent: torchmetrics hands a custom network (the project always passes one) the images as "
                 "they are, whatever normalize says"),
                (("inception_score__mutmut_28",), "equivalent: torchmetrics' InceptionScore defaults to normalize=False"),
                (("fid__mutmut_48", "kid__mutmut_54"), "equivalent: real=None is falsy, as real=False is"),
                (("fid__mutmut_35", "inception_score__mutmut_22", "kid__mutmut_35", "memorisation__mutmut_18",
                  "memorisation__mutmut_21", "memorisation__mutmut_27", "memorisation__mutmut_30"), _DEVICE),
                (("inception_score__mutmut_36", "kid__mutmut_60"),
                 "equivalent on the CPU: fork_rng(devices=None) also forks the CUDA generators"),
                (("inception_score__mutmut_1", "inception_score__mutmut_3", "kid__mutmut_1", "kid__mutmut_2",
                  "kid__mutmut_4"),
                 "not worth a test: another default (11 splits, 101 subsets, subsets of 1001, seed 1) measures the "
                 "same thing"),
                (("inception_features__mutmut_6", "inception_features__mutmut_7", "inception_features__mutmut_8",
                  "inception_features__mutmut_9"),
                 "not worth a test: the wording when torch-fidelity, a dependency, is not installed"),
                (("memorisation__mutmut_23",), "equivalent: a correlation is never below -1, so -3 starts as -2 does"),
                (("memorisation__mutmut_36",),
                 "equivalent: windows that start one image apart overlap, and each image is still compared "
                 "(more slowly)"),
                (("memorisation__mutmut_45",),
                 "not worth a test: which of two equally near training images is named"),
                (("spectrum_log_distance__mutmut_5", "spectrum_log_distance__mutmut_7",
                  "spectrum_log_distance__mutmut_9", "spectrum_log_distance__mutmut_11"),
                 "equivalent for the project's spectra, which radial_power_spectrum computes in float64 already"),
            ) for name in names},
        },
    ),
    "tables": Target(
        "mrnet_utils/evaluation/tables.py",
        ("tests/test_evaluation.py",),
        {
            **{f"mrnet_utils.evaluation.tables.x_{name}": why for names, why in (
                (("evaluate_super_resolution__mutmut_1",), "equivalent: the batch size only groups the images"),
                (("evaluate_super_resolution__mutmut_4",),
                 "equivalent: on the 4-D images the table takes (checked next), axis +2 is axis -2"),
                (("evaluate_super_resolution__mutmut_48",),
                 "not worth a test: the baselines' timing column, which no test can pin"),
                (("evaluate_super_resolution__mutmut_155", "evaluate_super_resolution__mutmut_157"),
                 "equivalent: pandas stores None in a float column as NaN"),
                (("_table__mutmut_7",), "equivalent: pandas reads orient case-insensitively"),
                (("write_table__mutmut_32", "write_table__mutmut_35", "write_table__mutmut_42",
                  "write_table__mutmut_43"),
                 "not worth a test: the word naming the Markdown file in a write error (the CSV's is tested)"),
                (("markdown__mutmut_26",),
                 "equivalent: an index label is a method name, never a 'not computed' reason"),
                (("_markdown_cell__mutmut_7", "_markdown_cell__mutmut_8"),
                 "equivalent: at 1e5 (and up to 100001) both formats print 1e+05"),
                (("evaluate_generation__mutmut_1", "evaluate_generation__mutmut_2", "evaluate_generation__mutmut_4",
                  "evaluate_generation__mutmut_5", "generation_comparisons__mutmut_1",
                  "generation_comparisons__mutmut_2"),
                 "not worth a test: another default (11 splits, subsets of 1001, 1001 pairs, 501 draws, seed 1) "
                 "measures the same thing"),
                (("evaluate_generation__mutmut_30",), "equivalent: an empty string is falsy, as None is"),
                (("evaluate_generation__mutmut_49",),
                 "not worth a test: the boundary at exactly 2048 samples (FID above it is tested)"),
                (("evaluate_generation__mutmut_79", "evaluate_generation__mutmut_80", "evaluate_generation__mutmut_81"),
                 "not worth a test: the note's wording at 10,000 samples or more"),
                (("generation_comparisons__mutmut_119",),
                 "not worth a test: ddof 2 instead of 1 over 500 bootstrap draws changes the standard error by a "
                 "factor sqrt(499 / 498)"),
            ) for name in names},
            "mrnet_utils.evaluation.tables.xǁSRScoresǁcompare__mutmut_1":
                "not worth a test: another default seed measures the same thing",
            "mrnet_utils.evaluation.tables.xǁSRScoresǁper_exam__mutmut_3":
                "equivalent: pandas groupby treats sort=None as false (keeps the table's order, as tested)",
        },
    ),
    "pipeline": Target(
        "mrnet_utils/pipeline.py",
        ("tests/test_pipeline.py", "tests/test_wiring.py", "tests/test_guidance.py"),
        {
            "mrnet_utils.pipeline.x_sample_cascade__mutmut_1":
                "equivalent: image i depends only on seed i, not on the batch it is sampled in (tested)",
            "mrnet_utils.pipeline.x_sample_cascade__mutmut_2":
                "equivalent on the CPU: autocast is bf16 on CUDA only (the GPU check samples under it)",
            "mrnet_utils.pipeline.x_sample_cascade__mutmut_3": "not worth a test: whether the bar shows by default",
            "mrnet_utils.pipeline.x_sample_stage__mutmut_1":
                "equivalent: image i depends only on seed i, not on the batch it is sampled in (tested)",
            "mrnet_utils.pipeline.x_sample_stage__mutmut_2":
                "equivalent on the CPU: autocast is bf16 on CUDA only (the GPU check samples under it)",
            **{f"mrnet_utils.pipeline.x_sample_stage__mutmut_{n}": "not worth a test: whether a bar shows by default"
               for n in (3, 5)},
            **{f"mrnet_utils.pipeline.x_sample_stage__mutmut_{n}": _DEVICE
               for n in (68, 70, 100, 103, 107, 118, 150, 158, 168)},
            **{f"mrnet_utils.pipeline.x_sample_stage__mutmut_{n}":
               "equivalent on the CPU: autocast is bf16 on CUDA only (the GPU check samples under it)" for n in (176, 178)},
            "mrnet_utils.pipeline.x_write_png__mutmut_18": "equivalent: PIL reads the format name in any case",
            "mrnet_utils.pipeline.x_sample_cascade__mutmut_48":
                "equivalent on the CPU: autocast is bf16 on CUDA only (the GPU check samples under it)",
            "mrnet_utils.pipeline.x_save_grid__mutmut_9": "equivalent: make_grid's default padding is 2",
            "mrnet_utils.pipeline.x_save_grid__mutmut_20":
                "equivalent: make_grid repeats a one-channel image into three equal channels",
            **{f"mrnet_utils.pipeline.x_write_samples__mutmut_{n}": "not worth a test: the indentation of samples.json"
               for n in (75, 77, 78)},
        },
    ),
    # The training loop, in two targets that each fit a session or continue across sessions from their saved
    # state (`--resume`): its functions whose tests train networks (loop_train, the costliest) and the rest.
    "loop_rest": Target(
        "mrnet_utils/training/loop.py",
        _LOOP_TESTS,
        {
            **{f"mrnet_utils.training.loop.x__inside__mutmut_{n}":
               "not worth a test: a gradient norm (a float) exactly at an edge of grad_norm_window" for n in (2, 3)},
            **{f"mrnet_utils.training.loop.x_train_step__mutmut_{n}":
               "equivalent: every parameter is in the loss's graph (test_a_grad_clip_of_zero_leaves_the_gradients_"
               "as_they_are), so backward writes the same gradient into a zeroed or a dropped one" for n in (18, 19)},
            **{f"mrnet_utils.training.loop.x__resume_point__mutmut_{n}":
               "not worth a test: which caller's line the warning about a damaged final checkpoint points at"
               for n in (12, 13)},
            "mrnet_utils.training.loop.x__resume_point__mutmut_16":
                "not worth a test: a final and a step checkpoint of the same step (the final is written at the "
                "last step, step checkpoints before it; only a later extension's stop could write both)",
        },
        functions=("xǁTrainingStoppedǁ__init__", "xǁTrainStateǁpayload", "x_restore", "x_train_step", "x__inside",
                   "x__check_same_data", "x__describe_data", "x__refuse_fewer_steps", "xǁ_RateWindowǁ__init__",
                   "xǁ_RateWindowǁrate", "x__log_row", "x__refuse_earlier_run", "x__resume_point",
                   "x__write_sample_grid"),
    ),
    "loop_train": Target(
        "mrnet_utils/training/loop.py",
        _LOOP_TESTS,
        {
            **{f"mrnet_utils.training.loop.x__train__mutmut_{n}": _DEVICE for n in (48, 50, 141, 180, 260, 334)},
            **{f"mrnet_utils.training.loop.x__train__mutmut_{n}":
               "equivalent on the CPU: channels-last is chosen on CUDA only, and this keeps the CPU's standard "
               "layout (the GPU check trains channels-last on CUDA)" for n in (51, 53, 54, 58, 142)},
            "mrnet_utils.training.loop.x__train__mutmut_52":
                "not worth a test: channels-last is a memory layout; on the CPU it changes the speed, not what is "
                "computed (beyond float rounding); the GPU check trains channels-last on CUDA",
            "mrnet_utils.training.loop.x__train__mutmut_69":
                "equivalent: a fresh run has refused a folder that holds a checkpoint already (`_refuse_earlier_run`, "
                "which looks for the same files), so restoring finds none",
            **{f"mrnet_utils.training.loop.x__train__mutmut_{n}":
               "equivalent on the CPU: autocast is bf16 on CUDA only (the GPU check trains under it)" for n in (102, 104)},
            "mrnet_utils.training.loop.x__train__mutmut_107":
                "not worth a test: which checkpoint another rank than 0 names when its own step is non-finite "
                "(rank 0 writes the checkpoints and names the newest)",
            "mrnet_utils.training.loop.x__train__mutmut_265":
                "not worth a test: under DDP the other ranks would also write the stop checkpoint, the same bytes to "
                "the same file (each atomically, by rename); one process is rank 0 alone",
            "mrnet_utils.training.loop.x__train__mutmut_350":
                "equivalent: TrainingStopped reads resumable only for truth, and None is false as False is",
            "mrnet_utils.training.loop.x_build_state__mutmut_3": _DEVICE,
            "mrnet_utils.training.loop.x_build_state__mutmut_12":
                "equivalent: AveragedModel reads use_buffers only for truth, and None is false as False is",
            "mrnet_utils.training.loop.x_build_state__mutmut_15":
                "equivalent: AveragedModel's use_buffers defaults to False",
            **{f"mrnet_utils.training.loop.x_build_state__mutmut_{n}":
               "not worth a test: `fused` picks AdamW's kernel, not its step: unfused on CUDA (or fused on the CPU) "
               "computes the same update up to float rounding, at another speed" for n in (24, 28, 29, 30, 31)},
            "mrnet_utils.training.loop.x_build_state__mutmut_41":
                "equivalent: ReduceLROnPlateau's mode defaults to \"min\"",
        },
        functions=("x__train", "x_build_state", "x_train", "x_steps_for_epochs", "x_data_record"),
    ),
}
DEFAULT = ("schedules", "losses", "conditioning", "samplers", "statistics", "checkpoint")

# mutmut's exit codes, grouped (mutmut.__main__.status_by_exit_code).
_KILLED = {1, 3}
_TIMEOUT = {36, -24, 24, 152, 255}
_SURVIVED = {0}
_NO_TESTS = {5, 33}


@dataclass
class Outcome:
    name: str
    target: Target
    seconds: float
    statuses: dict[str, str]  # mutant name -> killed | timeout | survived | no tests | other (mutants run)
    diffs: dict[str, str]  # surviving mutant -> its diff
    runs: list[str]  # the commit of each run's copy of the code and tests, first to last
    not_run: list[str] = field(default_factory=list)  # mutants left when the run stopped at its time limit
    # The latest run that ran mutants, as its section's header says: its day, machine, command and tool.
    latest_run: dict[str, str] = field(default_factory=dict)
    rechecked: dict[str, str] = field(default_factory=dict)  # survivor noted as killed later -> commit it reran at

    def count(self, status: str) -> int:
        return sum(value == status for value in self.statuses.values())

    @property
    def score(self) -> float:
        """Share of mutants detected (killed, or stopped by the timeout), of all mutants."""
        detected = self.count("killed") + self.count("timeout")
        return detected / max(len(self.statuses), 1)


def _status(code: int | None) -> str:
    if code in _KILLED:
        return "killed"
    if code in _TIMEOUT:
        return "timeout"
    if code in _SURVIVED:
        return "survived"
    if code in _NO_TESTS:
        return "no tests"
    return f"other (exit code {code})"


_COMMIT = "COMMIT"  # in a module's scratch folder: the commit its copy was taken from
# Each module's saved run: the commit of every run, the minutes spent and mutmut's verdict for each mutant, so that
# `--resume` continues it on another machine or in another session, where the scratch folder is gone.
STATE = Path(__file__).with_name("mutation_state")


def _head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepare(work: Path, target: Target) -> None:
    """A scratch copy of the code and tests with mutmut's configuration for one module."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    # The committed code and tests (HEAD), so that a result names the commit it measured.
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "mrnet_utils", "tests", "pyproject.toml"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    tests = "\n    ".join(target.tests)
    (work / _COMMIT).write_text(_head() + "\n")
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = mrnet_utils\n"
        f"only_mutate = {target.path}\n"
        f"pytest_add_cli_args_test_selection =\n    {tests}\n"
        "pytest_add_cli_args = -p no:cacheprovider -q\n"
        "process_isolation = forkserver\n"
        "use_git_change_detection = false\n"
    )


def _seed(work: Path, target: Target, saved: dict) -> None:
    """Give a fresh copy the saved run's verdicts, which mutmut keeps for every function whose code is unchanged."""
    if saved["source_sha256"] != _source_hash(work / target.path):
        raise SystemExit(f"{target.path} changed since its saved run (commit {saved['runs'][-1]}), so its verdicts "
                         "no longer describe the code: run the module afresh, without --resume")
    meta = work / "mutants" / (target.path + ".meta")
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"exit_code_by_key": saved["exit_code_by_key"],
                                "hash_by_function_name": saved["hash_by_function_name"],
                                "durations_by_key": {}, "estimated_durations_by_key": {}}))


def _spurious_no_tests(codes: dict[str, int | None]) -> list[str]:
    """Mutants marked "no tests" in a function whose other mutants ran tests: mutmut lost its map from functions
    to tests (it does when a resumed copy changed), not a function that no test calls."""
    tested = {_order(mutant)[0] for mutant, code in codes.items() if code is not None and code not in _NO_TESTS}
    return [mutant for mutant, code in codes.items() if code in _NO_TESTS and _order(mutant)[0] in tested]


def run_module(name: str, work_root: Path, max_children: int, minutes: float | None = None,
               resume: bool = False, this_run: dict[str, str] | None = None, recheck: bool = False) -> Outcome:
    """Mutate one module and run its tests against each mutant, for at most `minutes` (None: until done).

    `resume` continues the module's earlier run: in `work_root` when its scratch folder is there, else from its
    saved state (`STATE`) in a fresh copy of HEAD; the results stand, mutmut runs only the mutants without one,
    and the minutes add up. The run's state is saved when it stops, with `this_run` (its day, machine, command
    and tool) when it ran mutants: a call that runs none (`minutes=0`) reports the saved run's.

    `recheck` runs the saved run's survivors noted as killed by a later test again, in a fresh copy of HEAD, so
    that its tests give their verdicts; the other verdicts stand.
    """
    target = MODULES[name]
    work = work_root / name
    state_file = STATE / f"{name}.json"
    saved = json.loads(state_file.read_text()) if (resume or recheck) and state_file.exists() else None
    if recheck and not saved:
        raise SystemExit(f"--recheck runs the survivors of a saved run, and {name} has none in {state_file}")
    if recheck or not (resume and (work / _COMMIT).exists()):
        _prepare(work, target)
        if saved:
            _seed(work, target, saved)
    runs = saved["runs"] if saved else []
    meta = work / "mutants" / (target.path + ".meta")
    module = target.path.removesuffix(".py").replace("/", ".")
    selection = []  # mutmut runs every mutant without a verdict when given none
    rechecked = (saved or {}).get("rechecked", {})
    if recheck:  # named, they run again
        selection = [mutant for mutant, code in saved["exit_code_by_key"].items()
                     if code in _SURVIVED and target.covers(mutant) and target.killed_later(mutant)]
    elif target.functions:
        if meta.exists():  # the named mutants run even with a verdict: name those without one
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            selection = [mutant for mutant, code in codes.items() if code is None and target.covers(mutant)]
        else:
            selection = [f"{module}.{function}__mutmut_*" for function in target.functions]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread per worker
    log = work / "mutmut.log"
    seconds = saved["seconds"] if saved else 0.0
    latest_run = (saved or {}).get("latest_run") or this_run or {}
    if minutes != 0 and (selection or not (target.functions or recheck)):
        latest_run = this_run or {}
        if not recheck:
            runs = [*runs, (work / _COMMIT).read_text().strip()]
        start = time.perf_counter()
        with log.open("a") as handle:
            # A session of its own, so that stopping it at the time limit stops its workers too.
            process = subprocess.Popen(
                [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *selection],
                cwd=work, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                process.wait(timeout=None if minutes is None else minutes * 60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGINT)  # mutmut stops its workers on an interrupt
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        seconds += time.perf_counter() - start
    if not meta.exists():
        raise SystemExit(f"mutmut wrote no results for {target.path}; see {log}")
    mutmut_meta = json.loads(meta.read_text())
    codes = mutmut_meta["exit_code_by_key"]
    if recheck:  # those it ran: a fresh copy times only the mutants it runs
        commit = (work / _COMMIT).read_text().strip()
        ran = mutmut_meta["durations_by_key"]
        rechecked = {**rechecked, **{mutant: commit for mutant in selection if mutant in ran}}
    spurious = _spurious_no_tests(codes)
    for mutant in spurious:
        codes[mutant] = None
    diffs = {mutant: diff for mutant, diff in (saved["diffs"] if saved else {}).items() if codes.get(mutant) == 0}
    for mutant, code in codes.items():
        if code in _SURVIVED and mutant not in diffs:
            shown = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=work, env=env,
                                   capture_output=True, text=True, check=False).stdout
            diffs[mutant] = "\n".join(line for line in shown.splitlines()
                                      if line[:1] in "+-" and not line.startswith(("+++", "---")))
    STATE.mkdir(exist_ok=True)
    state_file.write_text(json.dumps({
        "module": target.path, "source_sha256": _source_hash(work / target.path), "runs": runs,
        "seconds": round(seconds, 1), "latest_run": latest_run, "rechecked": rechecked,
        "hash_by_function_name": mutmut_meta["hash_by_function_name"],
        "exit_code_by_key": codes, "diffs": diffs}, indent=0, sort_keys=True) + "\n")
    if spurious:
        meta.write_text(json.dumps({**mutmut_meta, "exit_code_by_key": codes}))
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)  # mutmut maps the tests afresh
        raise SystemExit(f"mutmut marked {len(spurious)} mutants of tested functions as having no tests: it lost its "
                         f"map from functions to tests. Their verdicts are cleared and the map with them; run again "
                         f"with --resume. State saved in {state_file}.")
    codes = {mutant: code for mutant, code in codes.items() if target.covers(mutant)}
    not_run = sorted((mutant for mutant, code in codes.items() if code is None), key=_order)
    statuses = {mutant: _status(code) for mutant, code in codes.items() if code is not None}
    return Outcome(name, target, seconds, statuses, {m: d for m, d in diffs.items() if m in statuses}, runs, not_run,
                   latest_run, {mutant: commit for mutant, commit in rechecked.items() if mutant in statuses})


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"
    return f"{cpu}, {os.cpu_count()} cores, load average at start {load}; Python {sys.version.split()[0]}"


def section(outcome: Outcome, machine: str, command: str, tool: str, day: str | None = None) -> str:
    """The RESULTS.md section of one module's run, on `day` (default today); `tool` names the mutation tool, its
    version and workers."""
    target = outcome.target
    total = len(outcome.statuses)
    rows = [
        "| mutants | killed | timeout | survived | no tests | score | minutes |",
        "|---|---|---|---|---|---|---|",
        f"| {total} | {outcome.count('killed')} | {outcome.count('timeout')} | {outcome.count('survived')} "
        f"| {outcome.count('no tests')} | {outcome.score:.1%} | {outcome.seconds / 60:.1f} |",
    ]
    latest = " of the latest run" if len(outcome.runs) > 1 else ""
    lines = [
        f"Date{latest}: {day or date.today().isoformat()}. Tool: {tool}. "
        f"Machine: {machine}.",
        "",
        f"Command{latest} (from the repository root): `{command}`, at commit {_runs(outcome.runs)}.",
        "",
        *_recheck_lines(outcome),
        f"Tests run against each mutant: {', '.join(f'`{test}`' for test in target.tests)} (those of them that "
        "call the mutated function).",
        "",
        *rows,
        "",
    ]
    if outcome.not_run:
        functions = {}
        for mutant in outcome.not_run:
            function = _order(mutant)[0].rsplit(".", 1)[-1]
            functions[function] = functions.get(function, 0) + 1
        # A target that runs the functions left on their own continues the run; else --resume does.
        rest = [f"`--modules {name}` runs {', '.join(f'`{f}`' for f in other.functions)} on their own"
                for name, other in MODULES.items() if other is not target and other.path == target.path
                and other.functions and set(other.functions) == set(functions)]
        lines += [f"{_STOPPED} {len(outcome.not_run)} more mutants not run, so not counted above: "
                  + ", ".join(f"`{function}` ({count})" for function, count in functions.items())
                  + ". " + ("; ".join(rest) or "`--resume` continues the run") + ".", ""]
    if outcome.diffs:
        lines.append("Surviving mutants:")
        lines.append("")
        for mutant, diff in sorted(outcome.diffs.items(), key=lambda item: _order(item[0])):
            why = target.notes.get(mutant, "not yet judged")
            if mutant in outcome.rechecked and target.killed_later(mutant):
                why = f"not yet judged: noted as {why}, but it survived the recheck at {outcome.rechecked[mutant]}"
            lines.append(f"- `{mutant.rsplit('.', 1)[-1]}`: {why}")
            lines.append("")
            lines.append("  ```diff")
            lines.extend(f"  {line}" for line in diff.splitlines())
            lines.append("  ```")
    else:
        lines.append("No mutant survived.")
    others = sorted(mutant for mutant, status in outcome.statuses.items() if status.startswith(("no tests", "other")))
    if others:
        lines.append("")
        lines.append("Not run by any of these tests, or ended otherwise: "
                     + ", ".join(f"`{m.rsplit('.', 1)[-1]}` ({outcome.statuses[m]})" for m in others) + ".")
    return "\n".join(lines)


def _recheck_lines(outcome: Outcome) -> list[str]:
    """What `--recheck` did: the survivors noted as killed by later tests, run again at a later commit."""
    if not outcome.rechecked:
        return []
    killed = sum(outcome.statuses[mutant] in ("killed", "timeout") for mutant in outcome.rechecked)
    commits = ", ".join(dict.fromkeys(outcome.rechecked.values()))
    return [f"Rechecked at {commits}: {len(outcome.rechecked)} of the survivors, noted as killed by a test written "
            f"after their run, ran again against that commit's tests; {killed} were killed. Their verdicts and minutes "
            "are in the counts.", ""]


def _runs(commits: list[str]) -> str:
    """The commit of a run, or of a run continued in several."""
    if len(commits) < 2:
        return commits[0] if commits else "(none)"
    later = list(dict.fromkeys(c for c in commits[1:] if c != commits[0]))
    return (f"{commits[0]} (in {len(commits)} runs" + (f", continued at {', '.join(later)} with the module unchanged, "
            "whose tests ran against the mutants left" if later else "") + "; minutes are of all of them)")


def _order(mutant: str) -> tuple[str, int]:
    function, _, number = mutant.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


SUMMARY = "Mutation testing: summary"
_STOPPED = "Stopped at its time limit:"
_SECTION = "Mutation testing: "


def summary(text: str) -> str:
    """One row per module section of a RESULTS.md text, as measured there (each at its own commit), with how
    many of its survivors are not yet judged; then the total."""
    header = ["| module | commit | mutants | killed | timeout | survived | no tests | score | minutes | not yet judged |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    rows, totals, covered = [], [0] * 5, []  # covered: (path, its functions; None: all of them)
    sections = re.finditer(rf"^## {_SECTION}(\S+\.py)(: [^\n]+)?\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    for path, functions, body in (match.groups() for match in sections):
        covered.append((path, set(re.findall(r"`([^`]+)`", functions)) if functions else None))
        commit = re.search(r"at commit (\w+)", body).group(1)
        counts = re.search(r"^\| (\d+) \|.*\|$", body, re.M).group(0).strip("| ").split(" | ")
        totals = [total + int(count) for total, count in zip(totals, counts)]
        partial = " (partial)" if _STOPPED in body else ""
        rows.append(f"| `{path}`{functions or ''}{partial} | {commit} | {' | '.join(counts)} | {body.count(': not yet judged')} |")
    detected = (totals[1] + totals[2]) / max(totals[0], 1)
    total = f"| all | | {' | '.join(map(str, totals))} | {detected:.1%} | | |"
    # Sections of one module that share functions (a whole-module run shares all of them).
    shared = sorted({path for (path, one), (other_path, other) in itertools.combinations(covered, 2)
                     if path == other_path and (one is None or other is None or one & other)})
    caveat = [f"\n{', '.join(f'`{path}`' for path in shared)} has sections that share functions (a run of the "
              "whole module and one of some of its functions): a mutant run in both counts in both rows, and twice "
              "in 'all'."]
    return "\n".join([*header, *rows, total, *(caveat if shared else [])])


def main(argv: list[str] | None = None) -> list[Outcome]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", choices=list(MODULES), default=list(DEFAULT),
                        help=f"modules to mutate (default: {' '.join(DEFAULT)})")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "mutation",
                        help="scratch folder for the mutated copies (default runs/mutation)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print the sections only")
    parser.add_argument("--minutes", type=float, help="stop each module after this many minutes; its section "
                        "counts the mutants run and lists those left (default: no limit)")
    parser.add_argument("--resume", action="store_true",
                        help="continue each module's earlier run (its copy and results stand): in --work, or from "
                        "its saved state in benchmarks/mutation_state in a fresh copy of HEAD")
    parser.add_argument("--recheck", action="store_true",
                        help="run the saved run's survivors noted as killed by a later test again, against HEAD's "
                        "tests, in a fresh copy (the other verdicts stand)")
    args = parser.parse_args(argv)
    try:
        tool = f"mutmut {metadata.version('mutmut')}, {args.max_children} worker(s)"
    except metadata.PackageNotFoundError:
        raise SystemExit("mutmut is not installed: pip install -e '.[mutation]'") from None
    command = " ".join(["python", "-m", "benchmarks.mutation", *(sys.argv[1:] if argv is None else argv)])
    outcomes = []
    for name in args.modules:
        this_run = {"machine": _machine(), "command": command, "tool": tool, "day": date.today().isoformat()}
        outcome = run_module(name, args.work, args.max_children, args.minutes, args.resume, this_run, args.recheck)
        body = section(outcome, **outcome.latest_run)
        print(f"## {_SECTION}{outcome.target.title}\n\n{body}\n", flush=True)
        if not args.no_write:
            update_section(args.results, f"{_SECTION}{outcome.target.title}", body)
            update_section(args.results, SUMMARY, "Each module's latest run, from its section below.\n\n"
                           + summary(args.results.read_text()), before=_SECTION)
        outcomes.append(outcome)
    return outcomes


if __name__ == "__main__":
    main()
