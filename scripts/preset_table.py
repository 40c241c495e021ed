"""Write docs/presets.md: every setting of every stage in the presets, side by side, from config.PRESETS.

    python scripts/preset_table.py            # rewrite docs/presets.md
    python scripts/preset_table.py --check    # exit 1 if docs/presets.md is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd

from mrnet_utils.config import PRESETS, stage_config
from mrnet_utils.evaluation.tables import markdown
from mrnet_utils.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "presets.md"
SHOWN = ("reference", "full", "gpu", "demo")  # smoke is test plumbing


def render() -> str:
    lines = [
        "# Every setting of the presets",
        "",
        "Written by `python scripts/preset_table.py` from `mrnet_utils/config.py` (tests/test_readme.py",
        "checks it is current). The reference study's own values, with the notebook cell of each, are in",
        "README.md, \"Presets\". Settings are per stage, with the Swin bottleneck (the no-Swin variants differ",
        "only in `unet.use_swin`, and in the `reference` preset in the epochs and learning rate of its runs).",
    ]
    for stage in STAGES:
        columns = {}
        for name in SHOWN:
            settings = stage_config(stage, name, use_swin=True).flat_settings()
            columns[f"`{name}`"] = {key: str(value) for key, value in settings.items() if key not in ("stage", "preset")}
        table = pd.DataFrame(columns)
        table.index.name = "setting"
        lines += ["", f"## {stage}", "", markdown(table)]
    study = pd.DataFrame({f"`{name}`": {key: str(value) for key, value in dataclasses.asdict(PRESETS[name].study).items()}
                          | {"sampler": str(PRESETS[name].sampler)} for name in SHOWN})
    study.index.name = "study setting"
    lines += ["", "## The study each preset runs", "", markdown(study)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/presets.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is out of date; run python scripts/preset_table.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
