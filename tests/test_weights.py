"""`python -m mrnet_utils weights`: the listing, the SHA-256 check and the download, on local files only.

The downloads read `file://` URLs through torch.hub's own download path: no network in tests.
"""

import hashlib

import pytest

from mrnet_utils import cli
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation import weights
from mrnet_utils.evaluation.weights import WEIGHT_FILES, WeightFile, check, fetch

CONTENT = b"stand-in weights\n" * 1000
PREFIX = hashlib.sha256(CONTENT).hexdigest()[:8]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no weight variables."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for spec in WEIGHT_FILES.values():
        monkeypatch.delenv(spec.env, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def toy(tmp_path, monkeypatch, hub):
    """WEIGHT_FILES holding one small file, named after the start of its digest as the real ones are, served
    from a local URL."""
    source = tmp_path / "server" / f"toy-{PREFIX}.pth"
    source.parent.mkdir()
    source.write_bytes(CONTENT)
    spec = WeightFile(files=(source.name,), env="MRNET_TOY_WEIGHTS", url=source.as_uri(), used_by="a test")
    monkeypatch.setattr(weights, "WEIGHT_FILES", {"toy": spec})
    monkeypatch.delenv(spec.env, raising=False)
    return spec


def test_the_digest_prefix_is_read_from_each_real_files_name_as_torch_hub_reads_it():
    assert {name: spec.digest_prefix for name, spec in WEIGHT_FILES.items()} == {
        "inception": "6726825d", "alex": "7be5be79", "vgg": "397923af"}


def test_the_listing_names_each_file_where_it_goes_and_where_to_fetch_it(hub, capsys):
    assert cli.main(["weights"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 * len(WEIGHT_FILES)
    for (network, spec), (what, where, state) in zip(WEIGHT_FILES.items(), zip(out[::3], out[1::3], out[2::3])):
        assert what == f"{network}: {spec.used_by}"
        assert where == f"  file: {hub / spec.files[0]} (or set ${spec.env} to its path)"
        assert state == f"  missing; `weights --download` fetches it from {spec.url}"


def test_a_file_is_usable_only_with_the_digest_its_name_gives(toy, hub, tmp_path, monkeypatch):
    hub.mkdir(parents=True)
    (hub / toy.files[0]).write_bytes(CONTENT)
    status = check("toy")
    assert (status.path, status.digest, status.problem) == (hub / toy.files[0], hashlib.sha256(CONTENT).hexdigest(), None)
    assert status.describe().endswith(f"present, SHA-256 {status.digest} (starts with {PREFIX}, as its name says)")
    (hub / toy.files[0]).write_bytes(CONTENT + b"one more byte")
    assert check("toy").problem.startswith("damaged or another file: its SHA-256 ")
    elsewhere = tmp_path / "mine.pth"  # a file named by its variable is checked the same way
    elsewhere.write_bytes(CONTENT)
    monkeypatch.setenv(toy.env, str(elsewhere))
    assert check("toy").path == elsewhere and check("toy").problem is None
    assert f"file: {elsewhere} (from ${toy.env})" in check("toy").describe()
    monkeypatch.setenv(toy.env, str(tmp_path / "nowhere.pth"))
    assert check("toy").problem == (f"missing; {toy.env} points to {tmp_path / 'nowhere.pth'}, which is not a file; "
                                    f"a test needs {toy.files[0]}")


def test_download_fetches_the_missing_files_and_checks_them(toy, hub, capsys):
    assert cli.main(["weights", "--download"]) == 0
    out, err = capsys.readouterr()
    assert err == f"downloading {toy.url}\n" and (hub / toy.files[0]).read_bytes() == CONTENT
    assert out.splitlines()[-1].startswith(f"  present, SHA-256 {hashlib.sha256(CONTENT).hexdigest()}")
    assert cli.main(["weights", "--download"]) == 0 and capsys.readouterr().err == ""  # nothing left to fetch


def test_a_download_with_another_digest_or_none_at_all_fails_in_one_line_and_writes_nothing(toy, hub, tmp_path,
                                                                                             monkeypatch):
    other = WeightFile(files=("toy-00000000.pth",), env=toy.env, url=toy.url, used_by="a test")
    monkeypatch.setattr(weights, "WEIGHT_FILES", {"toy": other})
    with pytest.raises(MRNetError, match=r"^downloading toy-00000000.pth from file:.* failed \(invalid hash value "
                                         r"\(expected \"00000000\", got \"[0-9a-f]{64}\"\)\); on a machine without") as bad:
        fetch("toy")
    assert "\n" not in str(bad.value) and not list(hub.iterdir())  # torch.hub removed its temporary file
    gone = WeightFile(files=(f"toy-{PREFIX}.pth",), env=toy.env, url=(tmp_path / "none" / "x.pth").as_uri(),
                      used_by="a test")
    monkeypatch.setattr(weights, "WEIGHT_FILES", {"toy": gone})
    with pytest.raises(MRNetError) as unreachable:
        fetch("toy")
    assert str(unreachable.value) == (
        f"downloading toy-{PREFIX}.pth from {gone.url} failed (<urlopen error [Errno 2] No such file or directory: "
        f"'{tmp_path / 'none' / 'x.pth'}'>); on a machine without internet, fetch it elsewhere and copy it to "
        f"{hub / gone.files[0]}")
    assert not list(hub.iterdir())
