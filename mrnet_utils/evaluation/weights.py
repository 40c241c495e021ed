"""The pretrained weight files the metrics need: where they are looked for, whether they are intact, fetching them.

Nothing downloads implicitly: the metrics only look for the files (`find_weights`), and `fetch` (the command
line's `python -m mrnet_utils weights --download`) downloads them on request, on a machine with internet.
The libraries that publish these files name each after the start of its SHA-256 digest
(`alexnet-owt-7be5be79.pth`); `torch.hub` checks that prefix when it downloads with `check_hash`, and so do
`check` and `fetch` here. The lpips package ships its own linear layers; only its backbone is fetched.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from mrnet_utils.errors import MRNetError


class MissingWeights(MRNetError):
    """A pretrained network's weight file (or the package that reads it) is not on this machine."""


@dataclass(frozen=True)
class WeightFile:
    """Where a pretrained network's weights come from and where they are looked for."""

    files: tuple[str, ...]  # accepted names in the torch hub cache; the first is the canonical one
    env: str  # environment variable that may hold the file's path
    url: str  # the URL the library that reads the file downloads it from
    used_by: str

    @property
    def digest_prefix(self) -> str:
        """The start of the file's SHA-256 digest, as its name gives it (torch.hub's rule)."""
        return torch.hub.HASH_REGEX.search(self.files[0]).group(1)


WEIGHT_FILES = {
    # torch-fidelity re-hosts pytorch-fid's conversion of the TF FID Inception under another
    # name; both names end in the same SHA-256 prefix (6726825d), so either file works.
    "inception": WeightFile(
        files=("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth"),
        env="MRNET_INCEPTION_WEIGHTS",
        url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        used_by="FID/IS/KID (FID Inception-v3)",
    ),
    "alex": WeightFile(
        files=("alexnet-owt-7be5be79.pth",),
        env="MRNET_LPIPS_WEIGHTS",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        used_by="LPIPS (torchvision AlexNet backbone)",
    ),
    "vgg": WeightFile(
        files=("vgg16-397923af.pth",),
        env="MRNET_LPIPS_VGG_WEIGHTS",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        used_by="LPIPS (torchvision VGG16 backbone)",
    ),
}


def hub_folder() -> Path:
    """Where torchvision and torch-fidelity cache downloaded weights (`torch.hub.get_dir()/checkpoints`)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(network: str, path: str | os.PathLike | None = None) -> Path:
    """Return the local weight file of `network` (a key of WEIGHT_FILES); never downloads.

    Looks, in order, at `path`, the environment variable `WEIGHT_FILES[network].env`, and `hub_folder()`.
    Raises MissingWeights naming the file and the ways to supply it.
    """
    spec = WEIGHT_FILES[network]
    for given, source in ((path, "the weights argument"), (os.environ.get(spec.env), spec.env)):
        if given:
            if not Path(given).is_file():
                raise MissingWeights(f"{source} points to {given}, which is not a file; {spec.used_by} needs {spec.files[0]}")
            return Path(given)
    cache = hub_folder()
    for name in spec.files:
        if (cache / name).is_file():
            return cache / name
    raise MissingWeights(
        f"{spec.used_by} needs {spec.files[0]}, which is not in {cache}; run `python -m mrnet_utils weights "
        f"--download` where there is internet, or fetch it from {spec.url} and put it there, set "
        f"{spec.env}=/path/to/{spec.files[0]}, or pass its path"
    )


def destination(network: str) -> Path:
    """Where `fetch` writes the file: the path its environment variable names, else the hub cache."""
    spec = WEIGHT_FILES[network]
    return Path(os.environ.get(spec.env) or hub_folder() / spec.files[0])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightStatus:
    network: str
    path: Path | None  # the file the metrics would read; None: not on this machine
    digest: str | None  # its SHA-256
    problem: str | None  # why it cannot be used (missing, or the wrong digest); None: it can

    def describe(self) -> str:
        """Three lines for the command line: what needs the file, where it is (or goes), and its state."""
        spec = WEIGHT_FILES[self.network]
        where = self.path or destination(self.network)
        how = f"from ${spec.env}" if os.environ.get(spec.env) else f"or set ${spec.env} to its path"
        state = self.problem or f"present, SHA-256 {self.digest} (starts with {spec.digest_prefix}, as its name says)"
        return f"{self.network}: {spec.used_by}\n  file: {where} ({how})\n  {state}"


def check(network: str) -> WeightStatus:
    """Whether `network`'s weight file is where the metrics look for it, with the SHA-256 its name gives."""
    spec = WEIGHT_FILES[network]
    try:
        path = find_weights(network)
    except MissingWeights as missing:
        told = str(missing) if os.environ.get(spec.env) else f"`weights --download` fetches it from {spec.url}"
        return WeightStatus(network, None, None, f"missing; {told}")
    digest = sha256(path)
    if not digest.startswith(spec.digest_prefix):
        return WeightStatus(network, path, digest, f"damaged or another file: its SHA-256 {digest} does not start "
                            f"with {spec.digest_prefix}; delete it and run `weights --download` again")
    return WeightStatus(network, path, digest, None)


def fetch(network: str) -> Path:
    """Download `network`'s weight file to `destination(network)` with torch.hub, which writes it only once its
    SHA-256 starts as the file's name says. MRNetError, in one line, when the download fails."""
    spec, target = WEIGHT_FILES[network], destination(network)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(spec.url, str(target), hash_prefix=spec.digest_prefix, progress=False)
    except (OSError, RuntimeError) as error:  # URLError and HTTPError are OSErrors; a wrong digest a RuntimeError
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MRNetError(f"downloading {spec.files[0]} from {spec.url} failed ({reason}); on a machine without "
                         f"internet, fetch it elsewhere and copy it to {target}") from None
    return target
