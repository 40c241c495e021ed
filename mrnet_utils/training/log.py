"""The training log, in the run folder: one CSV row every `log_every` steps, and the same values with the
sample grids as TensorBoard event files beside it (`tensorboard --logdir RUN_FOLDER`, or a folder of runs)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from mrnet_utils.errors import MRNetError
from mrnet_utils.files import write_atomically, write_failure

LOG_FILE = "train_log.csv"
LOG_COLUMNS = ("step", "loss", "lr", "images_per_s", "elapsed_s", "skipped", "val_loss")
EVENT_SCALARS = ("loss", "lr", "images_per_s", "val_loss")  # the columns also written as TensorBoard scalars


def append_log(path: Path, row: dict) -> None:
    """Append one row (and the header, to a new log). A write that fails (a full disk, a quota, a file-size
    limit) is one MRNetError line naming the log, and leaves the log as it was: no torn row, no empty file."""
    size = path.stat().st_size if path.exists() else None
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LOG_COLUMNS)
    if size is None:
        writer.writeheader()
    writer.writerow(row)
    try:
        with path.open("a", newline="", encoding="utf-8") as handle:
            handle.write(text.getvalue())
    except OSError as error:
        try:
            if size is None:
                path.unlink(missing_ok=True)
            else:
                os.truncate(path, size)  # shrinking needs no space
        except OSError:
            pass  # a row torn here is dropped when the run restarts (truncate_log)
        raise MRNetError(write_failure(path, error, "training log")) from None


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows past `step`: those a run wrote after the checkpoint it restarts from (all of them
    when it restarts from step 0), which the restarted run writes again. Atomic: a crash here leaves
    the old log or the new one."""
    if not path.exists():
        return
    with path.open(newline="", encoding="utf-8") as handle:
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


class EventLog:
    """TensorBoard event files in the run folder (torch.utils.tensorboard), written by the process that writes
    the log (`enabled`): each log row's EVENT_SCALARS under "train/", and each sample grid under "samples".

    A run calls `restart(step)` where it truncates its CSV log: TensorBoard then hides the events an earlier
    attempt wrote past that step (SummaryWriter's purge_step), which this run writes again. The files are
    created at the first event, so that a run that fails before it leaves none; leaving the context closes them.
    """

    def __init__(self, run_dir: Path, enabled: bool):
        self.run_dir, self.enabled = run_dir, enabled
        self.purge_step = 1
        self.writer: SummaryWriter | None = None

    def restart(self, step: int) -> None:
        self.purge_step = step + 1

    def add_row(self, row: dict) -> None:
        """A log row as `append_log` takes it (numbers, or their text; an empty val_loss is left out)."""
        if self._open():
            for name in EVENT_SCALARS:
                if row[name] != "":
                    self.writer.add_scalar(f"train/{name}", float(row[name]), int(row["step"]))

    def add_grid(self, path: Path, step: int) -> None:
        """A sample grid as its PNG was written."""
        if self._open():
            with Image.open(path) as image:
                self.writer.add_image("samples", np.asarray(image.convert("L")), step, dataformats="HW")

    def _open(self) -> bool:
        if self.enabled and self.writer is None:
            self.writer = SummaryWriter(str(self.run_dir), purge_step=self.purge_step)
        return self.writer is not None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
