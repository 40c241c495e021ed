"""The MRNet reader on a good phantom and on copies broken in every way it checks."""

import pickle
import re
import shutil

import numpy as np
import pytest

from mrnet_utils.data.mrnet import (
    Exam,
    iter_exams,
    list_exam_ids,
    load_volume,
    read_labels,
)
from mrnet_utils.data.phantom import write_phantom
from mrnet_utils.errors import MRNetError


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("reader") / "MRNet", 2, 1, seed=3, progress=False, workers=1)


@pytest.fixture
def root(good, tmp_path):
    """A private copy to break."""
    return shutil.copytree(good, tmp_path / "MRNet")


def _read_all(root, split="train", plane="axial"):
    return list(iter_exams(root, split, plane))


def test_reads_a_good_folder(good):
    labels = read_labels(good, "train")
    assert list(labels) == [0, 1] and all(set(exam) == {"abnormal", "acl", "meniscus"} for exam in labels.values())
    for line in (good / "train-acl.csv").read_text(encoding="utf-8").splitlines():
        exam_id, label = line.split(",")
        assert labels[int(exam_id)]["acl"] == int(label)
    exams = _read_all(good, "valid", "sagittal")
    assert [exam.exam_id for exam in exams] == [2] == list_exam_ids(good, "valid", "sagittal")
    exam = exams[0]
    assert isinstance(exam, Exam) and exam.split == "valid" and exam.plane == "sagittal"
    np.testing.assert_array_equal(exam.volume, np.load(good / "valid/sagittal/0002.npy"))
    assert exam.labels == read_labels(good, "valid")[2]


def test_reads_chosen_exams_in_the_order_given(good):
    assert [exam.exam_id for exam in iter_exams(good, "train", "coronal", [1, 0])] == [1, 0]
    with pytest.raises(MRNetError, match="exam id 7 is not in the train split"):
        iter_exams(good, "train", "coronal", [7])


@pytest.mark.parametrize("name, value, listed", [("split", "test", "train, valid"),
                                                 ("plane", "transverse", "axial, coronal, sagittal")])
def test_bad_split_or_plane_lists_the_valid_ones(good, name, value, listed):
    arguments = {"split": "train", "plane": "axial", name: value}
    with pytest.raises(MRNetError, match=f"{name} must be one of {listed}"):
        iter_exams(good, **arguments)


def test_missing_root(tmp_path):
    with pytest.raises(MRNetError, match=f"{tmp_path / 'nowhere'} does not exist"):
        read_labels(tmp_path / "nowhere", "train")


def test_missing_split_folder(root):
    shutil.rmtree(root / "valid")
    with pytest.raises(MRNetError, match="valid/coronal is missing"):
        _read_all(root, "valid", "coronal")


def test_missing_plane_folder(root):
    shutil.rmtree(root / "train" / "coronal")
    with pytest.raises(MRNetError, match="train/coronal is missing"):
        _read_all(root, "train", "coronal")


def test_missing_label_file(root):
    (root / "train-acl.csv").unlink()
    with pytest.raises(MRNetError, match="train-acl.csv is missing"):
        _read_all(root)


def test_empty_label_file(root):
    (root / "train-meniscus.csv").write_text("\n", encoding="utf-8")
    with pytest.raises(MRNetError, match="train-meniscus.csv is empty"):
        _read_all(root)


@pytest.mark.parametrize("row, problem", [
    ("0000,1,0", "3 columns, expected 2"),
    ("0000", "1 columns, expected 2"),
    ("id,label", "is not two integers"),
    ("0000,yes", "is not two integers"),
    ("0000,2", "label 2 for exam 0000 is not 0 or 1"),
    ("-001,1", "exam id -1 is negative"),
])
def test_malformed_label_file(root, row, problem):
    lines = (root / "train-abnormal.csv").read_text(encoding="utf-8").splitlines()
    (root / "train-abnormal.csv").write_text("\n".join([row] + lines[1:]) + "\n", encoding="utf-8")
    with pytest.raises(MRNetError, match=f"train-abnormal.csv, line 1: .*{problem}"):
        _read_all(root)


def test_duplicate_ids(root):
    lines = (root / "train-acl.csv").read_text(encoding="utf-8").splitlines()
    (root / "train-acl.csv").write_text("\n".join(lines + [lines[0]]) + "\n", encoding="utf-8")
    with pytest.raises(MRNetError, match="train-acl.csv, line 3: exam 0000 is listed twice"):
        _read_all(root)


def test_label_files_listing_different_exams(root):
    lines = (root / "train-meniscus.csv").read_text(encoding="utf-8").splitlines()
    (root / "train-meniscus.csv").write_text(lines[0] + "\n", encoding="utf-8")
    with pytest.raises(MRNetError, match="train-abnormal.csv and .*train-meniscus.csv list different exams"):
        _read_all(root)


def test_label_without_volume(root):
    (root / "train" / "axial" / "0001.npy").unlink()
    with pytest.raises(MRNetError, match="train/axial/0001.npy is missing but exam 0001 is in"):
        _read_all(root)


def test_volume_without_label(root):
    shutil.copy(root / "train" / "axial" / "0001.npy", root / "train" / "axial" / "0099.npy")
    with pytest.raises(MRNetError, match="train/axial/0099.npy has no row in .*train-abnormal.csv"):
        _read_all(root)


def test_volume_not_named_by_id(root):
    shutil.copy(root / "train" / "axial" / "0001.npy", root / "train" / "axial" / "scan.npy")
    with pytest.raises(MRNetError, match="train/axial/scan.npy is not named like an MRNet volume"):
        _read_all(root)


# '²' and Arabic-Indic digits pass str.isdigit() (and int() reads the latter); five or three digits are not MRNet's.
@pytest.mark.parametrize("name", ["0000\u00b2.npy", "\u0660\u0660\u0660\u0661.npy", "00001.npy", "001.npy",
                                  "._0001.npy"])
def test_volume_names_are_exactly_four_ascii_digits(root, name):
    shutil.copy(root / "train" / "axial" / "0001.npy", root / "train" / "axial" / name)
    with pytest.raises(MRNetError, match=f"train/axial/{re.escape(name)} is not named like an MRNet volume "
                                         r"\(NNNN.npy, four digits\)"):
        _read_all(root)


def test_label_files_saved_by_excel_are_read_as_they_are(root, good):
    """Excel writes UTF-8 CSVs with a byte-order mark and CRLF line ends; the labels read the same."""
    for task in ("abnormal", "acl", "meniscus"):
        path = root / f"train-{task}.csv"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_text(encoding="utf-8").replace("\n", "\r\n").encode())
    assert read_labels(root, "train") == read_labels(good, "train")
    assert [exam.exam_id for exam in _read_all(root)] == [0, 1]


@pytest.mark.parametrize("row", ["\u0660\u0660\u0660\u0660,1", "0000,\u00b9"])
def test_label_ids_and_labels_are_ascii_integers(root, row):
    lines = (root / "train-abnormal.csv").read_text(encoding="utf-8").splitlines()
    (root / "train-abnormal.csv").write_text("\n".join([row] + lines[1:]) + "\n", encoding="utf-8")
    with pytest.raises(MRNetError, match="train-abnormal.csv, line 1: .* is not two integers id,label"):
        _read_all(root)


@pytest.mark.parametrize("array, problem", [
    (np.zeros((20, 256, 256), np.float32), "float32 \\(20, 256, 256\\)"),
    (np.zeros((20, 128, 128), np.uint8), "uint8 \\(20, 128, 128\\)"),
    (np.zeros((256, 256), np.uint8), "uint8 \\(256, 256\\)"),
    (np.zeros((0, 256, 256), np.uint8), "uint8 \\(0, 256, 256\\)"),
])
def test_volume_of_the_wrong_type_or_shape(root, array, problem):
    np.save(root / "train" / "axial" / "0001.npy", array)
    with pytest.raises(MRNetError, match=f"train/axial/0001.npy holds {problem}"):
        _read_all(root)


def test_truncated_volume(root):
    path = root / "train" / "axial" / "0001.npy"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MRNetError, match="train/axial/0001.npy is not a readable .npy volume"):
        _read_all(root)


@pytest.mark.parametrize("content", [b"not an array at all", pickle.dumps([1, 2, 3])])
def test_file_that_is_not_npy(root, content):
    (root / "train" / "axial" / "0001.npy").write_bytes(content)
    with pytest.raises(MRNetError, match="train/axial/0001.npy is not a readable .npy volume"):
        _read_all(root)


def test_object_array_is_refused_not_unpickled(root):
    np.save(root / "train" / "axial" / "0001.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MRNetError, match=r"train/axial/0001.npy holds object \(1,\); an MRNet volume is uint8"):
        _read_all(root)


def test_npz_renamed_to_npy(root):
    path = root / "train" / "axial" / "0001.npy"
    with open(path, "wb") as file:
        np.savez(file, volume=np.zeros((20, 256, 256), np.uint8))
    with pytest.raises(MRNetError, match="0001.npy is an .npz archive"):
        load_volume(path)
