"""scripts/compare_studies.py: two study folders agree when their tables (timing aside) and weights do."""

import importlib.util
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_studies", ROOT / "scripts" / "compare_studies.py")
compare_studies = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_studies)


def _study(out: Path, psnr: float = 20.0, seconds: float = 1.0, weight: float = 0.5, results: str = "results") -> Path:
    results = out / results / "demo" / "training"
    results.mkdir(parents=True)
    table = pd.DataFrame({"method": ["SR1", "lanczos"], "psnr": [psnr, 18.0], "train_seconds": [seconds, 0.0],
                          "images_per_s": [3.0 / seconds, 0.0], "per_seed": ["+0.1, -0.2", ""]})
    table.to_csv(results.parent / "sr.csv", index=False)
    table.to_csv(results / "log.csv", index=False)  # nested folders are compared too
    run = out / "savepoints" / "demo" / "sr1_swin"
    run.mkdir(parents=True)
    state = {"w": torch.full((2, 2), weight)}
    torch.save({"model": state, "ema": {"module.w": state["w"] * 2}, "step": 3}, run / "final.pt")
    return out


def test_the_same_study_agrees_whatever_its_timings(tmp_path, capsys):
    a, b = _study(tmp_path / "a"), _study(tmp_path / "b", seconds=7.0)
    assert compare_studies.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "timing columns left out: train_seconds, images_per_s" in out and "2 tensors" in out
    assert out.count("same ") == 3 and "every table and network agrees" in out


def test_a_study_with_its_tables_where_run_all_sh_wrote_them_before_compares_with_one_of_now(tmp_path, capsys):
    before, now = _study(tmp_path / "a", results="evaluation/results"), _study(tmp_path / "b")
    assert compare_studies.main([str(before), str(now)]) == 0
    assert "same      evaluation/results/demo/sr.csv" in capsys.readouterr().out
    assert compare_studies.main([str(before), str(_study(tmp_path / "c", psnr=21.0))]) == 1
    assert "DIFFERENT evaluation/results/demo/sr.csv" in capsys.readouterr().out


def test_a_changed_metric_a_changed_weight_or_a_missing_file_is_reported(tmp_path, capsys):
    a = _study(tmp_path / "a")
    assert compare_studies.main([str(a), str(_study(tmp_path / "b", psnr=20.0 + 1e-12))]) == 1
    assert "DIFFERENT results/demo/sr.csv" in capsys.readouterr().out
    seeds = _study(tmp_path / "s")
    table = pd.read_csv(seeds / "results" / "demo" / "sr.csv").assign(per_seed=["+0.1, -0.3", ""])
    table.to_csv(seeds / "results" / "demo" / "sr.csv", index=False)
    assert compare_studies.main([str(a), str(seeds)]) == 1  # a per-seed column is a result, not a timing
    assert "DIFFERENT results/demo/sr.csv" in capsys.readouterr().out
    assert compare_studies.main([str(a), str(_study(tmp_path / "c", weight=0.5 + 2**-20))]) == 1
    assert "DIFFERENT savepoints/demo/sr1_swin/final.pt: model.w differs" in capsys.readouterr().out
    d = _study(tmp_path / "d")
    (d / "results" / "demo" / "training" / "log.csv").unlink()
    assert compare_studies.main([str(a), str(d)]) == 1
    assert f"training/log.csv: only in {a}" in capsys.readouterr().out
