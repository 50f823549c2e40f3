"""The memory-mapped array file that holds a campaign's fitted neighbour model."""

from __future__ import annotations

import numpy as np
import pytest

from screening.io.array_file import ArrayFileError, open_arrays, write_arrays


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "points": rng.normal(size=(37, 5)),
        "index": rng.integers(0, 9, size=(37, 3)).astype(np.int32),
        "mean": rng.normal(size=37).astype(np.float32),
        "empty": np.zeros(0),
        "scalar": np.array(2.5),
        "strided": rng.normal(size=(6, 8))[:, ::2],  # not C-contiguous on the way in
    }


def test_arrays_and_meta_come_back_exactly(tmp_path) -> None:
    path = tmp_path / "state.arrays"
    arrays = _arrays()
    write_arrays(path, arrays, {"key": "abc", "params": [0.1, 1e-300, 3.0]})
    meta, back = open_arrays(path)
    assert meta == {"key": "abc", "params": [0.1, 1e-300, 3.0]}
    assert set(back) == set(arrays)
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape
        np.testing.assert_array_equal(back[name], a)


def test_writes_to_an_opened_array_never_reach_the_file(tmp_path) -> None:
    path = tmp_path / "state.arrays"
    write_arrays(path, _arrays(), {})
    _, first = open_arrays(path)
    first["mean"][:5] = 99.0  # what NeighbourGP.add does to its predictions
    assert first["mean"][0] == 99.0
    _, again = open_arrays(path)
    np.testing.assert_array_equal(again["mean"], _arrays()["mean"])


def test_a_rewrite_leaves_arrays_already_opened_intact(tmp_path) -> None:
    path = tmp_path / "state.arrays"
    write_arrays(path, _arrays(), {})
    _, old = open_arrays(path)
    write_arrays(path, {"mean": np.ones(3)}, {})  # atomic replace: a new file under the name
    np.testing.assert_array_equal(old["points"], _arrays()["points"])
    assert open_arrays(path)[1]["mean"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("cut", [0, 5, 30, -1])
def test_a_truncated_file_is_refused_with_its_name(tmp_path, cut) -> None:
    path = tmp_path / "state.arrays"
    write_arrays(path, _arrays(), {"key": "abc"})
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:-100])
    with pytest.raises(ArrayFileError, match="state.arrays"):
        open_arrays(path)


def test_a_foreign_or_damaged_file_is_refused(tmp_path) -> None:
    path = tmp_path / "x.arrays"
    np.savez(path.with_suffix(".npz"), a=np.ones(3))
    path.write_bytes(path.with_suffix(".npz").read_bytes())
    with pytest.raises(ArrayFileError, match="not an array file"):
        open_arrays(path)
    write_arrays(path, {"a": np.ones(3)}, {})
    data = bytearray(path.read_bytes())
    data[20] = 0xFF  # inside the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(ArrayFileError, match="damaged header"):
        open_arrays(path)


def test_object_arrays_are_refused_so_no_pickle_is_ever_stored(tmp_path) -> None:
    with pytest.raises(TypeError, match="object"):
        write_arrays(tmp_path / "x.arrays", {"ids": np.array(["a", None], dtype=object)}, {})
    assert not (tmp_path / "x.arrays").exists()


@pytest.mark.parametrize("entry", [{"offset": -64}, {"offset": 3}, {"shape": [-1]}, {"dtype": "|O"}, {"dtype": "no"}])
def test_a_header_entry_out_of_bounds_is_refused(tmp_path, entry) -> None:
    import json

    from screening.io.array_file import MAGIC

    path = tmp_path / "x.arrays"
    spec = {"dtype": "<f8", "shape": [2], "offset": 0, **entry}
    header = json.dumps({"meta": {}, "arrays": {"a": spec}}).encode()
    path.write_bytes(MAGIC + len(header).to_bytes(8, "little") + header + bytes(256))
    with pytest.raises(ArrayFileError, match="'a'"):
        open_arrays(path)
