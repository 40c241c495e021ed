"""Checkpoints: atomic saves, safe loads, retention and config checks.

A checkpoint is one `torch.save` file holding tensors and plain data only (no
pickled classes), so it loads with `torch.load(weights_only=True)` and loading
one can never run code. Its payload is a dict:

    {"format_version": 1, "config": StageConfig.to_dict(), "step": int,
     "model": state_dict, "ema": state_dict | None, "optimizer": state_dict,
     "lr_scheduler": state_dict, "rng": {...}, "log": {...}}

This module reads only "format_version", "config" and "step"; the rest is the
training loop's business. Storing the config is what lets `rebuild_config`
recreate the model from the file alone (as nanoGPT does).

Integrity. torch.load does not check the zip CRCs, so a flipped bit can load as changed
weights, keys or values without an error (docs/reliability.md). So `save_checkpoint` adds a
SHA-256 of the payload's content (every tensor's bytes, dtype and shape, every plain value) under
`DIGEST_KEY`, and `load_checkpoint` recomputes it over what it loaded. The digest
lives inside the one file, so the atomic replace covers it too (a sidecar file
could be left out of step with the checkpoint by a crash between two renames).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from mrnet_utils.config import StageConfig
from mrnet_utils.errors import MRNetError
from mrnet_utils.files import remove_stale_partials, write_atomically, write_failure
from mrnet_utils.networks import build_network
from mrnet_utils.pipeline import TrainedStage

FORMAT_VERSION = 1
FINAL_CHECKPOINT = "final.pt"  # a finished run's checkpoint; step checkpoints are step_{step:08d}.pt
DIGEST_KEY = "content_sha256"
REQUIRED_KEYS = ("format_version", "config", "step")
_STEP_FILE = re.compile(r"step_(\d+)\.pt")
# Settings a run may change when it resumes: they alter neither the weights'
# shapes nor what the network predicts, so `check_compatible` ignores them.
_FREE_SETTINGS = (
    "preset",
    "train.",
    "unet.dropout",
    "diffusion.min_snr_gamma",
    "conditioning.max_level",
    "conditioning.sample_level",
)
_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


def step_filename(step: int) -> str:
    return f"step_{step:08d}.pt"


def save_checkpoint(directory: str | Path, payload: dict[str, Any], keep: int = 3, name: str | None = None) -> Path:
    """Write `payload` to `directory/step_{step:08d}.pt` (or `directory/name`) atomically.

    The file is written to a temporary name in the same directory, flushed and
    fsynced, then renamed over the final name (files.write_atomically), so a crash at
    any moment leaves either the old file or the new one, never a torn one. Afterwards
    only the newest `keep` step checkpoints stay (files saved under a custom `name`,
    such as `final.pt`, are never removed). Temporary files of killed earlier saves are
    removed; those of a live process are not.
    """
    _check_keys(payload, "the payload to save")
    if keep < 1:
        raise MRNetError(f"keep={keep}: a checkpoint directory must keep at least 1 checkpoint")
    directory = Path(directory)
    path = directory / (name or step_filename(payload["step"]))
    stored = {**payload, DIGEST_KEY: _digest(payload)}
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MRNetError(write_failure(path, error, "checkpoint")) from None
    remove_stale_partials(directory)
    write_atomically(path, lambda handle: torch.save(stored, handle), "checkpoint")
    _remove_old_steps(directory, keep, path)
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu", check_finite: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, refusing anything that is not plain tensors and data.

    Also refused: a zip entry stored compressed (torch.save never compresses; a crafted one could inflate
    without bound), and, unless `check_finite` is false (to inspect a broken run), a floating-point tensor
    holding NaN or infinity, which would sample NaN images or train on NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise MRNetError(f"no checkpoint file at {path}; check the path (savepoints/<run>/step_*.pt)")
    _refuse_compressed(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's weights-only unpickler stops at any object it does not allow
        # (such as "GLOBAL posix.system") and at opcodes it does not read.
        refused = re.search(r"GLOBAL \S+", str(error))
        if refused is None:
            unreadable = re.search(r"Unsupported operand \d+", str(error))
            raise MRNetError(
                f"checkpoint {path} is truncated or corrupt, or not a checkpoint "
                f"({unreadable.group(0) if unreadable else 'unreadable pickle'})"
            ) from None
        raise MRNetError(
            f"refused to load {path}: it holds a pickled object ({refused.group(0)}), not plain tensors and data, "
            "and unpickling it could run code; use only checkpoints written by save_checkpoint "
            "(if this one was, the file is corrupt)"
        ) from None
    except Exception as error:  # a damaged zip surfaces as any of ~8 exception types
        raise MRNetError(
            f"checkpoint {path} is truncated or corrupt ({type(error).__name__}: {_first_line(error)})"
        ) from None
    if not isinstance(payload, dict) or DIGEST_KEY not in payload:
        raise MRNetError(f"{path} is not a checkpoint written by save_checkpoint (it has no {DIGEST_KEY})")
    expected = payload.pop(DIGEST_KEY)
    if _digest(payload) != expected:
        raise MRNetError(f"checkpoint {path} is truncated or corrupt: its content digest does not match")
    _check_keys(payload, f"checkpoint {path}")
    broken = _non_finite(payload, "") if check_finite else None
    if broken:
        raise MRNetError(f"checkpoint {path}: {broken} holds NaN or infinite values, so it cannot sample or train; "
                         "use an earlier checkpoint of the run, or train it again")
    return payload


def _refuse_compressed(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            squeezed = next((info.filename for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED),
                            None)
    except (zipfile.BadZipFile, OSError):
        return  # not a zip file: torch.load says what it is
    if squeezed:
        raise MRNetError(f"checkpoint {path}: entry {squeezed} is stored compressed, which torch.save never does; the "
                         "file was rewritten by other software, or is crafted: use the run's own checkpoint")


def _non_finite(value: Any, where: str) -> str | None:
    """The key path (e.g. `model.conv.weight`) of the first floating-point tensor in `value` holding NaN or inf."""
    if isinstance(value, torch.Tensor):
        finite = not value.is_floating_point() or bool(torch.isfinite(value).all())
        return None if finite else where or "a tensor"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest step checkpoint in `directory` that loads; damaged newer ones are skipped with a warning."""
    for path in reversed(_step_files(Path(directory))):
        try:
            load_checkpoint(path)
        except MRNetError as error:
            warnings.warn(f"skipping checkpoint {path}: {error}", stacklevel=2)
            continue
        return path
    return None


def rebuild_config(payload: dict[str, Any]) -> StageConfig:
    """The StageConfig a checkpoint was trained with."""
    return StageConfig.from_dict(payload["config"])


def load_stage(
    path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True, compile: bool = False
) -> TrainedStage:
    """Rebuild a stage from its checkpoint alone; a run folder means its final checkpoint.

    `compile=True` wraps the network in `torch.compile`: worth it for many samples on a
    GPU; the first batch (and a smaller last one) is slow while it compiles. Sampling keeps
    the default memory layout (benchmarks/RESULTS.md: channels-last made SR2 slower on a GPU).
    """
    path = Path(path)
    if path.is_dir():
        path = path / FINAL_CHECKPOINT
    payload = load_checkpoint(path)
    cfg = StageConfig.from_dict(payload["config"])
    model = build_network(cfg.unet)
    if use_ema and payload.get("ema") is not None:
        # torch.optim.swa_utils.AveragedModel keeps the network under `module.` plus a step counter.
        state = {k.removeprefix("module."): v for k, v in payload["ema"].items() if k.startswith("module.")}
    else:
        state = payload["model"]
    _check_shapes(path, model.state_dict(), state)
    model.load_state_dict(state)
    model = model.to(device).eval()
    return TrainedStage(torch.compile(model) if compile else model, cfg, payload["step"], path)


def _check_shapes(path: Path, expected: dict[str, torch.Tensor], found: dict[str, Any]) -> None:
    """One line naming the first tensor of the network the checkpoint's config describes that the checkpoint's
    weights lack or hold in another shape (or the first weight that network has no place for)."""
    for key, tensor in expected.items():
        if key not in found:
            problem = f"lacks {key} {tuple(tensor.shape)}"
        elif not isinstance(found[key], torch.Tensor) or found[key].shape != tensor.shape:
            shape = tuple(found[key].shape) if isinstance(found[key], torch.Tensor) else type(found[key]).__name__
            problem = f"holds {key} as {shape}, where its config's network has {tuple(tensor.shape)}"
        else:
            continue
        break
    else:
        extra = next((key for key in found if key not in expected), None)
        if extra is None:
            return
        problem = f"holds {extra}, which its config's network does not have"
    raise MRNetError(f"checkpoint {path} {problem}: its weights do not fit its own config (written by other code, "
                     "or edited); use a checkpoint written by this project's training")


def check_compatible(
    stored: dict[str, Any], expected: StageConfig, path: str | Path | None = None, resume: bool = False
) -> None:
    """Raise MRNetError when checkpoint payload `stored` was trained for another stage or network than `expected`.

    Compared: stage, every network setting but dropout, the noise process (process, T, schedule and
    betas, prediction, data range, ResShift's kappa and eta schedule, loss) and whether conditioning
    augmentation is on. Training settings (`train.*`, ...) may differ, except, with `resume`, the two
    that decide which training state the checkpoint holds: whether it keeps an EMA (train.ema_decay > 0)
    and its learning-rate schedule (train.lr_schedule).
    """
    found = rebuild_config(stored)
    found_settings, expected_settings = found.flat_settings(), expected.flat_settings()
    network = [
        f"{key} {found_settings[key]} vs {expected_settings[key]}"
        for key in expected_settings
        if not key.startswith(_FREE_SETTINGS) and found_settings.get(key) != expected_settings[key]
    ]
    state = _training_state_differences(found, expected) if resume else []
    if not network and not state:
        return
    source = f"checkpoint {path}" if path is not None else "the checkpoint"
    if _describe(found) != _describe(expected):
        head = f"{source} is {_describe(found)}, expected {_describe(expected)}"
    elif network:
        head = f"{source} holds a different {expected.name} network than the {expected.preset} config expects"
    else:
        head = f"{source} holds the training state of other settings than the {expected.preset} config's"
    advice = (
        "use the checkpoint trained for this config, or rebuild the model from the checkpoint's own config "
        "(rebuild_config)"
        if network
        else "resume with the run's own settings, or start a new run in another folder"
    )
    raise MRNetError(f"{head} (checkpoint vs expected: {'; '.join(network + state)}); {advice}")


def _training_state_differences(found: StageConfig, expected: StageConfig) -> list[str]:
    """What a resumed run could not restore: an EMA it lacks (or would drop), another LR scheduler's state."""
    differences = []
    if (found.train.ema_decay > 0) != (expected.train.ema_decay > 0):
        differences.append(
            f"train.ema_decay {found.train.ema_decay} vs {expected.train.ema_decay} (an EMA cannot be added to "
            "or dropped from a run)"
        )
    if found.train.lr_schedule != expected.train.lr_schedule:
        differences.append(f"train.lr_schedule {found.train.lr_schedule} vs {expected.train.lr_schedule}")
    return differences


def _remove_old_steps(directory: Path, keep: int, written: Path) -> None:
    # The file just written always stays, even if it has a lower step than others
    # (a run resumed from an earlier checkpoint).
    others = [path for path in _step_files(directory) if path != written]
    kept = keep - 1 if _STEP_FILE.fullmatch(written.name) else keep
    for path in others[: max(len(others) - kept, 0)]:
        path.unlink(missing_ok=True)


def _step_files(directory: Path) -> list[Path]:
    """Step checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    steps = {}
    for path in directory.iterdir():
        match = _STEP_FILE.fullmatch(path.name)
        if match:
            steps[int(match.group(1))] = path
    return [steps[step] for step in sorted(steps)]


def _digest(payload: dict[str, Any]) -> str:
    hasher = hashlib.sha256()
    _feed(hasher, payload, "payload")
    return hasher.hexdigest()


def _feed(hasher: Any, value: Any, where: str) -> None:
    """Hash `value` with its type and structure; refuse what weights_only loading would refuse."""
    if isinstance(value, torch.Tensor):
        hasher.update(f"tensor {value.dtype} {tuple(value.shape)}\n".encode())
        hasher.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    elif type(value) in (dict, OrderedDict):
        hasher.update(f"dict {len(value)}\n".encode())
        for key, item in value.items():
            _feed(hasher, key, f"a key of {where}")
            _feed(hasher, item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple, torch.Size):
        hasher.update(f"sequence {len(value)}\n".encode())
        for index, item in enumerate(value):
            _feed(hasher, item, f"{where}[{index}]")
    elif type(value) in _SCALARS:
        text = repr(value)
        hasher.update(f"{type(value).__name__} {len(text)} {text}\n".encode())
    else:
        raise MRNetError(
            f"{where} is a {type(value).__module__}.{type(value).__qualname__}; checkpoints hold only tensors "
            "and plain data (dict, list, tuple, str, numbers, None), so convert it (e.g. torch.from_numpy)"
        )


def _check_keys(payload: Any, what: str) -> None:
    if not isinstance(payload, dict):
        raise MRNetError(f"{what} is a {type(payload).__name__}, not a checkpoint dict")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise MRNetError(f"{what} lacks {', '.join(missing)}; a checkpoint needs {', '.join(REQUIRED_KEYS)}")
    if payload["format_version"] != FORMAT_VERSION:
        raise MRNetError(
            f"{what} has format_version {payload['format_version']!r}; this code reads version {FORMAT_VERSION}"
        )
    if type(payload["step"]) is not int or not isinstance(payload["config"], dict):
        raise MRNetError(f"{what} needs an int 'step' and a dict 'config' (StageConfig.to_dict())")


def _describe(config: StageConfig) -> str:
    side = config.resolution
    return f"{config.stage} ({side}x{side}, {'Swin' if config.unet.use_swin else 'no Swin'})"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


__all__ = [
    "FORMAT_VERSION",
    "FINAL_CHECKPOINT",
    "save_checkpoint",
    "load_checkpoint",
    "load_stage",
    "latest_checkpoint",
    "rebuild_config",
    "check_compatible",
    "step_filename",
]
