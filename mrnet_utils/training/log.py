"""The training log: one CSV row every `log_every` steps, in the run folder."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from mrnet_utils.errors import MRNetError

LOG_FILE = "train_log.csv"
LOG_COLUMNS = ("step", "loss", "lr", "images_per_s", "elapsed_s", "skipped", "val_loss")


def append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows past `step`, written after the checkpoint a resumed run starts from."""
    if not path.exists():
        return
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
    path.unlink()
    for row in rows:
        append_log(path, row)


def read_train_log(run_dir: str | Path) -> pd.DataFrame:
    """A run's train_log.csv (columns LOG_COLUMNS)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        raise MRNetError(f"no training log at {path}; train the stage first")
    return pd.read_csv(path)
