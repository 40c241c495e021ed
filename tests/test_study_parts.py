"""The study's parts run on their own (run_all.sh --only ...) on the smoke preset's preprocessed data: the
Swin question, the label study, training on several processes with torchrun, and a failing notebook.
Apart from tests/test_study.py's full smoke study, so that the two run side by side."""

import json

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest

from study_runs import ROOT, error_outputs, run_all


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    """A study folder holding only the smoke preset's preprocessed data (the phantom and the slice cache)."""
    out = tmp_path_factory.mktemp("parts")
    result = run_all("--preset", "smoke", "--only", "preprocess", "--out", str(out), "--device", "cpu")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return out


@pytest.mark.slow
def test_only_swin_asks_the_swin_question_in_its_notebook(smoke_data, tmp_path):
    """The opt-in Swin question: 2 SR stages x 4 arms x 3 seeds trained, scored and answered; and answered
    again from its per-slice scores alone (SCORES), nothing trained or scored."""
    result = run_all("--preset", "smoke", "--only", "swin", "--out", str(smoke_data), "--device", "cpu")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "05_swin_question.ipynb" in result.stdout and "02_pipeline" not in result.stdout
    runs, results = smoke_data / "runs" / "smoke", smoke_data / "results" / "smoke"
    assert error_outputs(nbformat.read(runs / "05_swin_question.ipynb", as_version=4)) == []
    trained = sorted(path.parent.name for path in (smoke_data / "savepoints" / "smoke" / "swin_question").glob("*/final.pt"))
    assert len(trained) == 2 * 4 * 2 and "sr2_ref_refswin_seed1" in trained  # the smoke preset: 2 seeds per arm
    per_slice = pd.read_csv(results / "swin_question_per_slice.csv")
    assert len(per_slice) == 2 * 4 * 2 * per_slice["slice_index"].groupby(per_slice["exam_id"]).nunique().sum()
    answer = pd.read_csv(results / "swin_question.csv")
    assert len(answer) == 2 * 4 * 2 and (answer["seeds"] == 2).all()  # stages x comparisons x metrics
    assert answer["per_seed"].str.count(",").eq(1).all() and answer["verdict"].str.len().gt(0).all()
    assert {"swin_question_sr1.png", "swin_question_sr2.png", "swin_question_arms.csv"} <= {p.name for p in results.iterdir()}
    times = pd.read_csv(results / "swin_question_time.csv").set_index("notebook")["seconds"]
    assert list(times.index) == ["05_swin_question"] and times.iloc[0] > 0
    checkpoints = {path: path.stat().st_mtime_ns for path in (smoke_data / "savepoints").rglob("*.pt")}
    again = tmp_path / "again"
    again.mkdir()
    papermill.execute_notebook(
        ROOT / "evaluation" / "swin_question.ipynb", again / "swin_question.ipynb", cwd=ROOT / "evaluation",
        kernel_name="mrnet-diffusion", progress_bar=False,
        parameters=dict(PRESET="smoke", OUT_DIR=str(smoke_data), RESULTS_DIR=str(again), PROGRESS=False,
                        SCORES=str(results / "swin_question_per_slice.csv")))
    # the same answer: the per-slice scores went through a CSV, so the numbers agree to float precision (and the
    # texts that print them, per seed and in a verdict, to their digits)
    recomputed, text = pd.read_csv(again / "swin_question.csv"), ["per_seed", "verdict"]
    pd.testing.assert_frame_equal(recomputed.drop(columns=text), answer.drop(columns=text), check_exact=False,
                                  rtol=1e-4, atol=1e-6)
    for mine, theirs in zip(recomputed["per_seed"], answer["per_seed"]):
        assert np.allclose(np.array(mine.split(","), float), np.array(theirs.split(","), float), rtol=0.05, atol=1e-6)
    assert [v.split(":")[0] for v in recomputed["verdict"]] == [v.split(":")[0] for v in answer["verdict"]]
    assert {path: path.stat().st_mtime_ns for path in (smoke_data / "savepoints").rglob("*.pt")} == checkpoints


@pytest.mark.slow
def test_only_labels_runs_the_label_study_in_its_notebook(smoke_data, tmp_path):
    result = run_all("--preset", "smoke", "--only", "labels", "--out", str(smoke_data), "--device", "cpu")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "06_labels.ipynb" in result.stdout and "02_pipeline" not in result.stdout
    runs, results = smoke_data / "runs" / "smoke", smoke_data / "results" / "smoke"
    assert error_outputs(nbformat.read(runs / "06_labels.ipynb", as_version=4)) == []
    assert (smoke_data / "savepoints" / "smoke" / "base64_labels" / "final.pt").is_file()
    shares = pd.read_csv(results / "labels_agreement.csv")
    assert len(shares) == 6 * 3 and (shares["samples"] == 2).all()  # requests x guidance scales
    auc = pd.read_csv(results / "labels_auc.csv")
    assert len(auc) == 3 * 3 and set(auc["trained on"]) == {"real", "synthetic", "real + synthetic"}
    assert {"labels_agreement.png", "labels_auc.png", "labels_samples.png", "labels_time.csv"} <= {
        p.name for p in results.iterdir()}
    # the notebook asks for the labels and scales it is given
    custom = tmp_path / "custom_labels"
    custom.mkdir()  # papermill writes the executed notebook there
    papermill.execute_notebook(
        ROOT / "evaluation" / "labels.ipynb", custom / "labels.ipynb", cwd=ROOT / "evaluation", kernel_name="mrnet-diffusion",
        progress_bar=False, parameters=dict(PRESET="smoke", OUT_DIR=str(smoke_data), RESULTS_DIR=str(custom), DEVICE="cpu",
                                            PROGRESS=False, REQUESTS=["acl=1", "meniscus=0"], SCALES=[0, 2]))
    shares = pd.read_csv(custom / "labels_agreement.csv")
    assert list(zip(shares["request"], shares["guidance"])) == [("acl=1", 0), ("acl=1", 2), ("meniscus=0", 0),
                                                                ("meniscus=0", 2)]


@pytest.mark.slow
def test_gpus_trains_each_model_with_torchrun_and_its_notebook_finds_it_trained(smoke_data):
    """--gpus 2 on this CPU: torchrun starts two processes per model, joined by gloo (NCCL on GPUs)."""
    result = run_all("--preset", "smoke", "--only", "base64", "--retrain", "--gpus", "2", "--device", "cpu",
                     "--out", str(smoke_data))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    # base64's two variants and the distilled Swin base, which torchrun distils round by round
    assert result.stdout.count("torchrun on 2 processes") == 3 and "02_pipeline" not in result.stdout
    runs, results = smoke_data / "runs" / "smoke", smoke_data / "results" / "smoke"
    assert "distilled base64_swin (smoke) to 2 steps" in (runs / "01_train_base64_swin_distilled.torchrun.log").read_text(encoding="utf-8")
    for name in ("base64_swin", "base64_noswin"):
        assert f"trained {name} (smoke) for 6 steps" in (runs / f"01_train_{name}.torchrun.log").read_text(encoding="utf-8")
        record = json.loads((results / "training" / f"{name}.json").read_text(encoding="utf-8"))
        assert record["trained"] is False and record["steps"] == 6  # the notebook found the final checkpoint
        assert "training skipped" in (runs / f"01_train_{name}.ipynb").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_failing_notebook_stops_the_run_with_its_name(tmp_path):
    empty = tmp_path / "not_mrnet"
    empty.mkdir()
    result = run_all("--preset", "smoke", "--mrnet-root", str(empty), "--out", str(tmp_path / "study"))
    assert result.returncode != 0
    assert "notebook notebooks/00_preprocess.ipynb failed" in result.stderr
    assert "MRNetError" in result.stderr and "/train/axial is missing" in result.stderr
    runs = tmp_path / "study" / "runs" / "smoke"
    kept = nbformat.read(runs / "00_preprocess.ipynb", as_version=4)
    assert any("is missing" in error for error in error_outputs(kept))
    assert [path.name for path in runs.glob("*.ipynb")] == ["00_preprocess.ipynb"]  # nothing ran after it
