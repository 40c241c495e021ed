"""Command line: `python -m mrnet_utils {synth,preprocess,train,distill,sample,score,export-html} ...`.

The notebooks call the same library functions. Bad arguments or inputs give one
line on stderr and exit status 2; a traceback means a bug. SIGTERM and SIGINT stop any
command with one line and the shell's status for the signal (143, 130): `train` at the end
of its current step, with that step saved, others at once, removing what they were writing.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

from mrnet_utils import __version__
from mrnet_utils.presets import PRESETS, stage_config
from mrnet_utils.data.mrnet import PLANES, TASKS
from mrnet_utils.data.preprocess import NORMALISATIONS, SELECTIONS
from mrnet_utils.diffusion.guidance import parse_labels
from mrnet_utils.diffusion.processes import PROCESSES, process_class, sampler_names
from mrnet_utils.errors import MRNetError
from mrnet_utils.interrupts import Interrupted, raise_on_stop_signals
from mrnet_utils.progress import LOG_SECONDS, quiet
from mrnet_utils.stages import STAGES

# Library parameters and the options that set them, for errors that name a parameter.
OPTIONS = {"out_dir": "--out", "resume": "--resume", "steps": "--steps", "sampler": "--sampler",
           "data_path": "--data", "overwrite": "--overwrite", "labels": "--labels", "guidance": "--guidance",
           "set": "--set", "process": "--process", "preset": "--preset", "teacher": "--teacher"}
CENTRAL_SLICES = 5  # preprocess's default number of central slices per series


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage and the message; we want one line
        raise MRNetError(f"{self.prog}: {message} (see --help)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (no value, or a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text}")
    return value


def _device(text: str) -> str:
    """A device this machine has: checked here, so that a typo is not a traceback from deep in torch."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text} is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: only cpu and cuda devices are supported")
    return text


def _synth(args: argparse.Namespace) -> None:
    from mrnet_utils.data.phantom import write_phantom

    root = write_phantom(args.out, args.train_exams, args.valid_exams, args.seed, overwrite=args.overwrite)
    print(f"wrote synthetic MRNet-format phantom to {root}")


def _preprocess(args: argparse.Namespace) -> None:
    from mrnet_utils.data.preprocess import preprocess
    from mrnet_utils.data.volumes import VALID_FRACTION, preprocess_volumes

    central = None if args.all_slices else args.central_slices or CENTRAL_SLICES
    volume_options = (args.pixel_size, args.exams, args.valid_fraction)
    if args.volumes is None:
        if any(option is not None for option in volume_options):
            raise MRNetError("--pixel-size, --exams and --valid-fraction read volumes: give --volumes, not --mrnet-root")
        out = preprocess(args.mrnet_root, args.plane, args.out, args.selection, central, args.max_exams,
                         normalisation=args.normalisation)
    else:
        fraction = VALID_FRACTION if args.valid_fraction is None else args.valid_fraction
        out = preprocess_volumes(args.volumes, args.plane, args.out, args.exams, fraction, args.pixel_size,
                                 args.selection, central, args.max_exams, normalisation=args.normalisation)
    print(f"wrote slice cache {out}")


def _train(args: argparse.Namespace) -> None:
    from mrnet_utils.training.checkpoint import load_checkpoint
    from mrnet_utils.training.loop import train

    cfg = stage_config(args.stage, args.preset, use_swin=not args.no_swin, process=args.process)
    if args.labels:  # label-conditional, for classifier-free guidance (diffusion.guidance)
        cfg = cfg.replace(unet={"num_labels": len(TASKS)})
    if args.steps:  # exactly this many, also for a preset that counts epochs
        cfg = cfg.replace(train={"steps": args.steps, "epochs": 0})
    if args.seed is not None:
        cfg = cfg.replace(train={"seed": args.seed})
    cfg = cfg.with_settings(dict(args.set))
    result = train(cfg, args.data, args.out, resume=args.resume, compile=args.compile, grids=not args.no_grids,
                   device=args.device)
    load_checkpoint(result.checkpoint)  # success is a final checkpoint that loads, not only a return
    if not result.trained_steps:  # --resume found the run complete
        print(f"{cfg.name} ({cfg.preset}) already has its {result.steps} steps; final checkpoint {result.checkpoint}")
        return
    print(
        f"trained {cfg.name} ({cfg.preset}) for {result.steps} steps in {result.seconds:.1f} s "
        f"({result.images_per_second:.1f} images/s); final checkpoint {result.checkpoint}"
    )


def _distill(args: argparse.Namespace) -> None:
    from mrnet_utils.training.checkpoint import FINAL_CHECKPOINT, load_checkpoint, rebuild_config
    from mrnet_utils.training.distill import distill

    path = args.teacher / FINAL_CHECKPOINT if args.teacher.is_dir() else args.teacher
    if not path.is_file():
        raise MRNetError(f"no teacher checkpoint at {args.teacher}: train the stage first", parameter="teacher")
    teacher = rebuild_config(load_checkpoint(path))
    cfg = stage_config(teacher.stage, teacher.preset, teacher.unet.use_swin, process="distilled")
    steps = {"diffusion.distilled_steps": args.steps, "diffusion.distilled_from": args.from_steps}
    cfg = cfg.with_settings({**{key: value for key, value in steps.items() if value}, **dict(args.set)})
    results = distill(cfg, path, args.data, args.out, resume=args.resume, grids=not args.no_grids, device=args.device)
    for result in results:
        done = f"trained in {result.seconds:.1f} s" if result.trained_steps else "already trained"
        print(f"round of {result.steps} steps {done}: {result.checkpoint}")
    print(f"distilled {teacher.name} ({teacher.preset}) to {cfg.diffusion.distilled_steps} steps: {args.out}")


def _sample(args: argparse.Namespace) -> None:
    from mrnet_utils.files import result_folder
    from mrnet_utils.pipeline import SAMPLE_FILES
    from mrnet_utils.stages import CASCADE

    expected = CASCADE if args.pipeline == "cascade" else ("single256",)
    if len(args.checkpoints) != len(expected):
        raise MRNetError(
            f"--pipeline {args.pipeline} needs {len(expected)} --checkpoints: {', '.join(expected)} (files or run folders)"
        )
    # The output folder is checked and locked before the first network evaluation; the samples are
    # written beside it and take its place only when all are written (files.result_folder).
    with result_folder(args.out, args.overwrite, SAMPLE_FILES, "samples folder") as folder:
        _sample_into(args, expected, folder)
    print(f"wrote {args.n} samples to {args.out}")


def _sample_into(args: argparse.Namespace, expected: tuple[str, ...], folder: Path) -> None:
    from mrnet_utils.diffusion.guidance import label_rows
    from mrnet_utils.pipeline import resolve_sampler, sample_cascade, write_sample_files
    from mrnet_utils.provenance import environment, stage_record
    from mrnet_utils.training.checkpoint import load_stage

    seeds = list(range(args.seed, args.seed + args.n))
    stages = [load_stage(path, args.device, compile=args.compile) for path in args.checkpoints]
    for stage, name in zip(stages, expected):
        if stage.config.stage != name:
            raise MRNetError(f"{stage.path} holds stage {stage.config.stage}, but --pipeline {args.pipeline} needs {name} there")
    samplers = None
    if args.sampler:  # for each stage that samples with it (a residual stage has its own sampler)
        samplers = {stage.config.stage: (args.sampler, args.steps) for stage in stages
                    if args.sampler in process_class(stage.config.diffusion.process).samplers}
        if not samplers:
            raise MRNetError(f"no stage of --pipeline {args.pipeline} samples with --sampler {args.sampler}")
    labels = None if args.labels is None else label_rows(args.labels, len(seeds))
    images = sample_cascade(stages, seeds, samplers, batch_size=args.batch_size, labels=labels,
                            guidance=args.guidance)[stages[-1].config.resolution]
    presets = sorted({stage.config.preset for stage in stages})
    provenance = {"pipeline": args.pipeline, "preset": presets[0] if len(presets) == 1 else presets,
                  "stages": [stage_record(stage.config, stage.path, stage.step,
                                          resolve_sampler(stage.config, (samplers or {}).get(stage.config.stage)))
                             for stage in stages],
                  "environment": environment()}
    write_sample_files(images, folder, seeds, args.labels, args.guidance, provenance)


def _score(args: argparse.Namespace) -> None:
    from mrnet_utils.data.samples import read_samples
    from mrnet_utils.evaluation.tables import write_table
    from mrnet_utils.files import result_folder
    from mrnet_utils.provenance import environment
    from mrnet_utils.study.generation import score_samples

    names = [name for name, _ in args.samples]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise MRNetError(f"--samples names {', '.join(repeated)} more than once; give each set of samples its own NAME")
    owned = (f"{args.name}.csv", f"{args.name}.md")
    record = {"samples": {name: str(path.resolve()) for name, path in args.samples}, "cache": str(args.cache.resolve()),
              "environment": environment()}
    with result_folder(args.out, args.overwrite, owned, "score folder", record=record) as folder:
        samples = {name: read_samples(path) for name, path in args.samples}
        table = score_samples(samples, args.cache, args.train_cache, args.tuning_exams, args.inception_weights)
        write_table(table, folder, args.name)
    print(f"wrote {args.out / owned[0]} and {args.out / owned[1]}")


def _check_study(args: argparse.Namespace) -> None:
    from mrnet_utils.presets import preset
    from mrnet_utils.study.sizes import check_sizes

    sizes, notes = check_sizes(args.cache, preset(args.preset).study, args.tuning_exams, args.eval_slices)
    print(f"study sizes on {args.cache}: {sizes.train_exams} train exams ({sizes.train_slices} slices), "
          f"{sizes.valid_exams} valid exams: {sizes.tuning_exams} for tuning, {sizes.reported_exams} reported "
          f"({sizes.reported_slices} slices); {sizes.samples} samples per model")
    for note in notes:
        print(f"note: {note}")


def _labels(text: str) -> dict[str, int]:
    try:
        return parse_labels(text)
    except MRNetError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _setting(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. train.lr=1e-4")
    return key.strip(), value.strip()


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def _named_path(text: str) -> tuple[str, Path]:
    name, separator, path = text.partition("=")
    if not separator or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH (a folder of PNGs or an .npy/.npz file)")
    return name, Path(path)


def _export_html(args: argparse.Namespace) -> None:
    from mrnet_utils.study.notebooks import export_html

    if args.out is not None and len(args.notebooks) > 1:
        raise MRNetError(f"--out names one page, but {len(args.notebooks)} notebooks were given; "
                         "export them one at a time, or leave out --out to write each page next to its notebook")
    for notebook in args.notebooks:
        page = export_html(notebook, args.out, link_figures=args.link_figures)
        print(f"{page} ({page.stat().st_size / 1e6:.2f} MB)")


def _weights(args: argparse.Namespace) -> None:
    from mrnet_utils.evaluation.weights import WEIGHT_FILES, check, fetch

    for network in WEIGHT_FILES:
        status = check(network)
        if args.download and status.problem:
            print(f"downloading {WEIGHT_FILES[network].url}", file=sys.stderr, flush=True)
            fetch(network)
            status = check(network)
        print(status.describe())


def _study_runs(args: argparse.Namespace) -> None:
    from mrnet_utils.config import run_name
    from mrnet_utils.study.layout import study_runs

    for stage, use_swin, process in study_runs():
        teacher = run_name(stage, use_swin) if process and process_class(process).from_teacher else None
        print(stage, use_swin, process, run_name(stage, use_swin, process), teacher)


def build_parser() -> argparse.ArgumentParser:
    # Longer than 70 lines: one add_argument per option of every command, read top to bottom as the --help.
    parser = _Parser(prog="mrnet_utils", description=__doc__.splitlines()[0], formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"mrnet_utils {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
        sub.add_argument("--quiet", action="store_true",
                         help=f"no progress output (a bar on a terminal, else a line every {LOG_SECONDS:g} s); "
                              "results and errors still print")
        return sub

    synth = command("synth", "write the synthetic knee phantom in MRNet's layout")
    synth.add_argument("--out", type=Path, required=True, help="folder to write (MRNet-v1.0 layout)")
    synth.add_argument("--train-exams", type=_positive, default=80, help="exams in the train split")
    synth.add_argument("--valid-exams", type=_positive, default=20, help="exams in the valid split")
    synth.add_argument("--seed", type=int, default=0, help="the phantom's random seed")
    synth.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    synth.set_defaults(run=_synth)

    prep = command("preprocess", "select, normalise and cache 256x256 slices")
    source = prep.add_mutually_exclusive_group(required=True)
    source.add_argument("--mrnet-root", type=Path, help="MRNet-v1.0 folder (or the phantom)")
    source.add_argument("--volumes", type=Path,
                        help="folder of NIfTI, NRRD or MHA volumes or DICOM series folders, one per exam (data.volumes)")
    prep.add_argument("--exams", type=Path,
                      help="with --volumes: CSV of exam,split[,abnormal,acl,meniscus] (default: exams.csv in the folder)")
    prep.add_argument("--valid-fraction", type=float,
                      help="with --volumes and no exam table: the share of exams, the last names, that are valid "
                           "(default: 0.2)")
    prep.add_argument("--pixel-size", type=float, metavar="MM",
                      help="with --volumes: resample in-plane to this pixel size (default: the volumes' own)")
    prep.add_argument("--plane", choices=PLANES, default="coronal", help="which series of each exam")
    prep.add_argument("--out", type=Path, required=True, help="the cache file to write (.npz)")
    prep.add_argument("--selection", choices=SELECTIONS, default="all",
                      help="all exams, one task's positives, or 'positives': each task's in turn, as the reference")
    prep.add_argument("--normalisation", choices=NORMALISATIONS, default="series",
                      help="'series': percentiles of the whole series; 'slice': each slice min-max (the reference's)")
    slices = prep.add_mutually_exclusive_group()
    slices.add_argument("--central-slices", type=_positive,
                        help=f"keep this many central slices of each series (default: {CENTRAL_SLICES})")
    slices.add_argument("--all-slices", action="store_true", help="keep every slice, not only the central ones")
    prep.add_argument("--max-exams", type=_positive, help="at most this many exams per split (default: all)")
    prep.set_defaults(run=_preprocess)

    train = command("train", "train one stage")
    train.add_argument("--stage", choices=tuple(STAGES), required=True, help="which stage of the study")
    train.add_argument("--no-swin", action="store_true", help="the variant without the Swin bottleneck")
    train.add_argument("--preset", choices=tuple(PRESETS), default="demo", help="the configuration (docs/presets.md)")
    train.add_argument("--data", type=Path, required=True, help="slice cache written by `preprocess`")
    train.add_argument("--out", type=Path, required=True, help="run folder for checkpoints and logs")
    train.add_argument("--process", choices=tuple(PROCESSES),
                       help="another process than the preset's, e.g. regression: the learned baseline of an SR stage")
    train.add_argument("--set", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                       help="change one setting of the preset's config, e.g. train.lr=1e-4 or unet.channels=8,16,16 "
                            "(repeatable; recorded in the checkpoint's config; docs/presets.md lists the settings)")
    train.add_argument("--steps", type=_positive,
                       help="train exactly this many steps (default: the preset's steps or epochs)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest good checkpoint in --out (nothing there: start afresh)")
    train.add_argument("--no-grids", action="store_true",
                       help="draw no sample grids (they sample the network; minutes for a large one on a CPU)")
    train.add_argument("--compile", action="store_true", help="torch.compile the network (GPU; slow first steps)")
    train.add_argument("--device", type=_device,
                       help="cpu, cuda or cuda:N (default: the GPU if there is one; under torchrun each process's own)")
    train.add_argument("--seed", type=_non_negative,
                       help="the training seed: initial weights, batches, noise (default: the preset's)")
    train.add_argument("--labels", action="store_true",
                       help=f"label-conditional: the network takes the labels {', '.join(TASKS)}, each dropped at "
                            "the preset's label_dropout, for sampling with --labels and --guidance")
    train.set_defaults(run=_train)

    distil = command("distill", "distil a trained generating stage into a few-step generator (progressive "
                                "distillation, Salimans & Ho 2022), round by round, each round resumable")
    distil.add_argument("--teacher", type=Path, required=True, help="the stage's trained run folder (or checkpoint)")
    distil.add_argument("--data", type=Path, required=True, help="slice cache the teacher was trained on")
    distil.add_argument("--out", type=Path, required=True,
                        help="run folder of the generator (its earlier rounds go to OUT/rounds/)")
    distil.add_argument("--steps", type=_positive, help="the generator's DDIM steps (default: the preset's)")
    distil.add_argument("--from-steps", type=_positive,
                        help="the teacher's DDIM steps in the first round, halved each round (default: the preset's)")
    distil.add_argument("--set", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="change one setting of every round's config, e.g. train.steps=100 (a round's budget)")
    distil.add_argument("--resume", action="store_true", help="continue a stopped distillation in --out")
    distil.add_argument("--no-grids", action="store_true", help="draw no sample grids")
    distil.add_argument("--device", type=_device,
                        help="cpu, cuda or cuda:N (default: the GPU if there is one)")
    distil.set_defaults(run=_distill)

    sample = command("sample", "generate 256x256 images from trained checkpoints")
    sample.add_argument("--pipeline", choices=("cascade", "single256"), required=True,
                        help="base64 -> sr1 -> sr2, or the single-stage model")
    sample.add_argument("--checkpoints", type=Path, nargs="+", required=True,
                        help="checkpoint files or run folders, one per stage in order")
    sample.add_argument("--n", type=_positive, default=16, help="number of images")
    sample.add_argument("--seed", type=_non_negative, default=0, help="image i uses seed SEED + i")
    sample.add_argument("--sampler", choices=sampler_names(),
                        help="a sampler for every stage that takes it (default: each stage's own: its full chain, or a "
                             "faster sampler shown equivalent to it on its preset's checkpoints)")
    sample.add_argument("--steps", type=_positive, help="sampler steps (with --sampler)")
    sample.add_argument("--batch-size", type=_positive, default=8, help="images per forward pass")
    sample.add_argument("--device", type=_device, default="cuda" if _cuda_available() else "cpu",
                        help="cpu, cuda or cuda:N")
    sample.add_argument("--out", type=Path, required=True, help="folder for the PNGs, grid.png and samples.npy")
    sample.add_argument("--overwrite", action="store_true",
                        help="replace the samples of a non-empty --out folder (otherwise it is refused)")
    sample.add_argument("--compile", action="store_true", help="torch.compile the networks (GPU; slow first batch)")
    sample.add_argument("--labels", type=_labels, metavar="NAME=0|1,...",
                        help=f"ask label-conditional stages for these labels ({', '.join(TASKS)}; one not named "
                             "is left unsaid), for example acl=1,meniscus=0")
    sample.add_argument("--guidance", type=_finite, default=1.0,
                        help="classifier-free guidance scale with --labels: 0 unconditional, 1 conditional, "
                             "more pushes further towards the labels")
    sample.set_defaults(run=_sample)

    score = command("score", "score generated images (PNG folders or arrays) on a slice cache's real slices")
    score.add_argument("--samples", type=_named_path, nargs="+", required=True, metavar="NAME=PATH",
                       help="a folder of PNGs or an .npy/.npz array per model; grey or RGB, any square size")
    score.add_argument("--cache", type=Path, required=True, help="slice cache whose valid slices are the real set")
    score.add_argument("--train-cache", type=Path, help="slice cache of the training slices, for memorisation "
                       "(default: --cache)")
    score.add_argument("--tuning-exams", type=_non_negative, default=0,
                       help="valid exams set aside for tuning, left out as the study leaves them out")
    score.add_argument("--inception-weights", type=Path, help="weights-inception-2015-12-05-6726825d.pth")
    score.add_argument("--out", type=Path, required=True, help="folder for the table")
    score.add_argument("--name", default="generation_scored", help="table file name (without extension)")
    score.add_argument("--overwrite", action="store_true",
                       help="replace the table of this --name in a non-empty --out folder (otherwise it is refused)")
    score.set_defaults(run=_score)

    presets = command("presets", "list the presets (config.PRESETS), one per line")
    presets.set_defaults(run=lambda args: print("\n".join(PRESETS)))

    check = command("check-study", "check the sizes the study needs against its slice cache, before any training "
                                   "(run_all.sh runs it after preprocessing)")
    check.add_argument("--cache", type=Path, required=True, help="the study's slice cache (written by `preprocess`)")
    check.add_argument("--preset", choices=tuple(PRESETS), default="demo", help="whose study settings to check")
    check.add_argument("--tuning-exams", type=_non_negative,
                       help="valid exams set aside for tuning (default: the preset's, as the notebooks choose it)")
    check.add_argument("--eval-slices", type=_positive, help="held-out slices the SR evaluation scores")
    check.set_defaults(run=_check_study)

    html = command("export-html", "render executed notebooks to pages to read (HTML, code folded), next to them")
    html.add_argument("notebooks", type=Path, nargs="+", metavar="NOTEBOOK")
    html.add_argument("--out", type=Path, metavar="PAGE", help="where to write the page (one notebook only)")
    html.add_argument("--link-figures", action="store_true",
                      help="link the figures the notebook saved in the page's folder instead of embedding them "
                           "again (a results folder that holds each figure once)")
    html.set_defaults(run=_export_html)

    weights = command("weights", "list the pretrained weight files the metrics need (FID/IS/KID Inception, LPIPS "
                                 "backbones): where each goes and whether it is there with the right SHA-256")
    weights.add_argument("--download", action="store_true",
                         help="fetch the missing or damaged ones (needs internet; nothing else ever downloads)")
    weights.set_defaults(run=_weights)

    runs = command("study-runs", "list the (stage, use_swin, process) runs the study trains, each with its run "
                                 "name and the run it learns from (None but for a distilled generator), for run_all.sh")
    runs.set_defaults(run=_study_runs)
    return parser


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    command = "the command"
    try:
        with raise_on_stop_signals("`mrnet_utils`"):
            args = build_parser().parse_args(argv)
            command = args.command
            if command == "sample" and bool(args.steps) != bool(args.sampler):
                raise MRNetError("--sampler and --steps go together (without them each stage uses its own sampler)")
            with raise_on_stop_signals(f"`{command}`; files it was writing were removed, finished ones kept"):
                with quiet() if args.quiet else nullcontext():
                    args.run(args)
    except MRNetError as error:
        print(f"error: {error}{_option(error.parameter)}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"stopped: {stop}{_option(stop.parameter)}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # SIGINT before the handlers were in place
        print(f"stopped: SIGINT stopped {command}", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


def _option(parameter: str | None) -> str:
    option = OPTIONS.get(parameter or "")
    return f" (option {option})" if option else ""
