"""The training log: one CSV row every `log_every` steps, in the run folder."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from mrnet_utils.errors import MRNetError
from mrnet_utils.files import write_atomically

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
    """Drop log rows past `step`: those a run wrote after the checkpoint it restarts from (all of them
    when it restarts from step 0), which the restarted run writes again. Atomic: a crash here leaves
    the old log or the new one."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        # A row torn by a kill mid-append lacks fields (DictReader fills them with None): dropped.
        rows = [row for row in csv.DictReader(handle)
                if None not in row.values() and row["step"].isdecimal() and int(row["step"]) <= step]
    if not rows:
        path.unlink()
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LOG_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda handle: handle.write(text.getvalue().encode()), "training log")


def read_train_log(run_dir: str | Path) -> pd.DataFrame:
    """A run's train_log.csv (columns LOG_COLUMNS)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        raise MRNetError(f"no training log at {path}; train the stage first")
    return pd.read_csv(path)
