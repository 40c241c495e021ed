"""The TensorBoard event files beside train_log.csv: the same rows, the sample grids, restarts hidden."""

import csv

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mrnet_utils.training.log import EVENT_SCALARS, LOG_FILE, EventLog


def events(folder):
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return accumulator


def row(step, loss, val_loss=""):
    return {"step": step, "loss": f"{loss:.6f}", "lr": "1.000e-03", "images_per_s": "5.00", "elapsed_s": "1.0",
            "skipped": 0, "val_loss": val_loss}


def test_a_runs_event_files_hold_its_log_rows_and_its_final_sample_grid(smoke_run):
    run = smoke_run("base64")
    with open(run.folder / LOG_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    logged = events(run.folder)
    for name in ("loss", "lr", "images_per_s"):
        scalars = logged.Scalars(f"train/{name}")
        assert [s.step for s in scalars] == [int(r["step"]) for r in rows] == [2, 4], name
        assert [s.value for s in scalars] == pytest.approx([float(r[name]) for r in rows], rel=1e-6), name
    assert "train/val_loss" not in logged.Tags()["scalars"]  # never measured under the warm-up schedule
    [grid] = logged.Images("samples")
    with Image.open(run.folder / "samples_final.png") as png:
        assert (grid.step, grid.width, grid.height) == (run.steps, *png.size)


def test_a_restarted_run_hides_the_events_an_earlier_attempt_wrote_past_its_checkpoint(tmp_path):
    with EventLog(tmp_path, enabled=True) as log:
        log.restart(0)
        assert not list(tmp_path.iterdir())  # no file before the first event
        for step in range(1, 5):
            log.add_row(row(step, step, val_loss=f"{step / 2:.6f}"))
    with EventLog(tmp_path, enabled=True) as log:  # the run restarts from its checkpoint at step 2
        log.restart(2)
        for step in (3, 4, 5):
            log.add_row(row(step, 10 * step))
    logged = events(tmp_path)
    assert [(s.step, s.value) for s in logged.Scalars("train/loss")] == [(1, 1), (2, 2), (3, 30), (4, 40), (5, 50)]
    assert [s.step for s in logged.Scalars("train/val_loss")] == [1, 2]  # blank values are left out
    assert set(logged.Tags()["scalars"]) == {f"train/{name}" for name in EVENT_SCALARS}


def test_another_rank_writes_no_event_file(tmp_path):
    with EventLog(tmp_path, enabled=False) as log:
        log.restart(0)
        log.add_row(row(1, 1.0))
    assert not list(tmp_path.iterdir())
