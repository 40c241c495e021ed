"""Does the synthetic phantom pass for real MRNet? The realism table and a small figure.

    python scripts/phantom_vs_real.py --mrnet-root ../shared/mrnet-sample/MRNet-v1.0

compares the coronal series of the real exams (train vs valid, and random half-splits
for the spread) with those of a phantom (written to a temporary folder with the demo's
48 + 12 exams unless --phantom-root is given) on the statistics of
`mrnet_utils.evaluation.realism`, over all slices of each series and over its --central-slices
central ones (the slices the study keeps), and writes to --out (default evaluation/results):
phantom_vs_real.csv (all slices), phantom_vs_real_central.csv, phantom_vs_real.md (both
tables) and phantom_vs_real.png (four phantom slices beside four real ones). Exits with a
one-line message when the real folder is absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mrnet_utils.evaluation import plots, realism
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.tables import write_table
from mrnet_utils.data.mrnet import iter_exams, read_labels
from mrnet_utils.data.phantom import write_phantom
from mrnet_utils.data.preprocess import normalise

PLANE = "coronal"
FIGURE_POSITIONS = (0.2, 0.45, 0.6, 0.85)  # along the series, one slice per exam: posterior to anterior


def _figure_slices(root: Path) -> list[np.ndarray]:
    """One raw slice from each of the first two train and first two valid exams, at FIGURE_POSITIONS."""
    exams = [(split, exam_id) for split in ("train", "valid") for exam_id in sorted(read_labels(root, split))[:2]]
    slices = []
    for (split, exam_id), position in zip(exams, FIGURE_POSITIONS):
        volume = next(iter_exams(root, split, PLANE, [exam_id])).volume
        slices.append(volume[round(position * (len(volume) - 1))])
    return slices


def _markdown_preamble(args, real_count: int, phantom_count: int, phantom_source: str) -> str:
    return (
        f"# Phantom vs real MRNet ({PLANE})\n\n"
        f"Real: {real_count} exams of `{args.mrnet_root.name}` (train vs valid = MRNet's split; spread = "
        f"median and {realism.SPREAD_QUANTILE:.0%} quantile over {args.repeats} random half-splits). "
        f"Phantom: {phantom_count} exams, {phantom_source}, against all {real_count} real exams. "
        "Slices normalised as the models see them (preprocess.normalise, then [0, 1]). "
        "`within_spread`: phantom_vs_real <= real_half_q95. Definitions in `mrnet_utils/evaluation/realism.py`. "
        "Regenerate with `python scripts/phantom_vs_real.py --mrnet-root ../shared/mrnet-sample/MRNet-v1.0`.\n\n"
        "## All slices of each series\n\n"
    )


def _central_heading(central_slices: int) -> str:
    return (f"\n## The {central_slices} central slices of each series\n\n"
            "The slices the study keeps (`preprocess.central_slice_indices`), each series normalised as a whole "
            "first; the same statistics but the number of slices, which every series shares here.\n\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mrnet-root", type=Path, required=True, help="real MRNet-v1.0 folder (e.g. the 18-exam sample)")
    parser.add_argument("--phantom-root", type=Path, help="an existing phantom folder (default: write one to a temporary folder)")
    parser.add_argument("--phantom-train", type=int, default=48, help="train exams of the written phantom (the demo's 48)")
    parser.add_argument("--phantom-valid", type=int, default=12, help="valid exams of the written phantom (the demo's 12)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the written phantom")
    parser.add_argument("--repeats", type=int, default=200, help="random half-splits of the real exams")
    parser.add_argument("--slice-pairs", type=int, help="diversity: slice pairs scored per pair of exams (default: all)")
    parser.add_argument("--central-slices", type=int, default=5,
                        help="the second table's central slices per series (the study's demo, gpu and full presets keep 5)")
    parser.add_argument("--out", type=Path, default=Path("evaluation/results"), help="folder for the table and figure")
    args = parser.parse_args(argv)
    if not args.mrnet_root.is_dir():
        print(f"real MRNet folder {args.mrnet_root} is absent; point --mrnet-root at MRNet-v1.0 "
              "(e.g. ../shared/mrnet-sample/MRNet-v1.0)", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as temporary:
            if args.phantom_root is None:
                started = time.perf_counter()
                phantom_root = write_phantom(Path(temporary) / "phantom", args.phantom_train, args.phantom_valid,
                                             seed=args.seed, progress=False)
                source = f"seed {args.seed}, written in {time.perf_counter() - started:.1f} s"
            else:
                phantom_root, source = args.phantom_root, f"from `{args.phantom_root.name}`"
            tables = {}
            for central in (None, args.central_slices):
                real, real_split = realism.summarise_folder(args.mrnet_root, normalise, PLANE, central_slices=central)
                phantom, _ = realism.summarise_folder(phantom_root, normalise, PLANE, central_slices=central)
                # Diversity: every pair of diversity slices from two different exams; the phantom, with more
                # exams, scores as many exam pairs as the real set has, so both means are equally precise.
                real_pairs = realism.diversity_pairs(real, per_exam_pair=args.slice_pairs, seed=args.seed)
                exam_pairs = len(real) * (len(real) - 1) // 2
                phantom_pairs = realism.diversity_pairs(phantom, per_exam_pair=args.slice_pairs,
                                                        max_exam_pairs=exam_pairs, seed=args.seed)
                tables[central] = realism.realism_table(real, real_split, real_pairs, phantom, phantom_pairs,
                                                        args.repeats)
            tables[args.central_slices] = tables[args.central_slices].drop(index="slices")  # the same in every series
            figure_slices = {"phantom": _figure_slices(phantom_root), "real MRNet": _figure_slices(args.mrnet_root)}
    except MRNetError as error:
        print(error, file=sys.stderr)
        return 1
    csv_path, md_path = write_table(tables[None], args.out, "phantom_vs_real")
    central_csv, central_md = write_table(tables[args.central_slices], args.out, "phantom_vs_real_central")
    md_path.write_text(_markdown_preamble(args, len(real), len(phantom), source) + md_path.read_text(encoding="utf-8")
                       + _central_heading(args.central_slices) + central_md.read_text(encoding="utf-8"), encoding="utf-8")
    central_md.unlink()  # its table is in phantom_vs_real.md
    fig = plots.plot_planes(figure_slices)
    fig.set_size_inches(1.2 * len(FIGURE_POSITIONS) + 0.4, 1.2 * len(figure_slices))
    figure = plots.save_figure(fig, args.out / "phantom_vs_real.png")
    for central, table in tables.items():
        print(f"{'all slices' if central is None else f'{central} central slices'} of each series:")
        print(table[["real_train_vs_valid", "real_half_q95", "phantom_vs_real", "within_spread"]].to_string())
    print(f"wrote {csv_path}, {central_csv}, {md_path} and {figure} ({source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
