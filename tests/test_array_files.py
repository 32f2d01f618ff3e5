"""Array files as predict inputs: the same rows as the same images read from PNGs, zero-copy where
the format allows, and errors that say what to change."""

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from foldcnn.data.readers import DataReadError
from foldcnn.infer import Predictor
from foldcnn.infer.array_files import iter_array_file
from foldcnn.infer.arrays import as_nchw
from tiny_data import one_thread, random_images, tiny_model, write_pngs  # noqa: F401 (one_thread: autouse)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N = 23  # not a multiple of the fold, nor of the pieces


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("arrays")
    x = random_images(N, seed=3)
    write_pngs(root / "png", x)
    nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    np.save(root / "nhwc.npy", nhwc)
    np.save(root / "nchw.npy", x.numpy())
    save_file({"images": x.numpy()}, root / "x.safetensors")
    table = pa.table({"image": pa.FixedShapeTensorArray.from_numpy_ndarray(nhwc)})
    pq.write_table(table, root / "x.parquet", row_group_size=10)  # several row groups
    with pa.OSFile(str(root / "x.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table, max_chunksize=7)
    # Ray Data's tensor column read without Ray: a list column whose field records the shape.
    storage = pa.array(list(nhwc.reshape(N, -1)), type=pa.list_(pa.uint8()))
    field = pa.field("image", storage.type, metadata={b"ARROW:extension:name": b"ray.data.arrow_tensor",
                                                        b"ARROW:extension:metadata": b"[12, 16, 3]"})
    pq.write_table(pa.Table.from_arrays([storage], schema=pa.schema([field])), root / "ray.parquet")
    return root, x


@pytest.mark.parametrize("name", ["nhwc.npy", "nchw.npy", "x.safetensors", "x.parquet", "x.arrow", "ray.parquet"])
def test_array_file_gives_the_rows_of_the_same_pngs(data, name):
    root, x = data
    with Predictor(tiny_model(3), workers=0, batch_size=9) as p:
        want = p.predict(root / "png")
        got = p.predict(root / name)
        mem = p.predict(x)
    assert [g.index for g in got] == list(range(N))
    assert [g.class_index for g in got] == [w.class_index for w in want] == [m.class_index for m in mem]
    np.testing.assert_array_equal(np.stack([g.probabilities for g in got]), np.stack([m.probabilities for m in mem]))
    assert {g.source for g in got} == {str(root / name)}


def test_array_files_mix_with_other_inputs_and_count_positions(data):
    root, x = data
    with Predictor(tiny_model(2), workers=2, batch_size=4) as p:
        got = p.predict([root / "x.safetensors", root / "png" / "00000.png", root / "nchw.npy"])
        want = p.predict(torch.cat([x, x[:1], x]))
    assert [g.index for g in got] == list(range(2 * N + 1))
    assert [g.class_index for g in got] == [w.class_index for w in want]


def test_progress_counts_the_images_of_array_files(data):
    from foldcnn.infer.sources import count_inputs

    root, _ = data
    assert count_inputs(root / "x.parquet") == count_inputs(root / "nchw.npy") == N
    assert count_inputs([root / "x.safetensors", root / "png" / "00000.png"]) == N + 1
    assert count_inputs(root / "x.arrow") is None  # would need a scan


def test_npy_and_read_only_arrays_are_not_copied(data):
    root, _ = data
    piece = next(iter_array_file(root / "nchw.npy", chunk=8))
    assert isinstance(piece.base, np.memmap) or isinstance(piece, np.memmap)
    ro = np.load(root / "nchw.npy")
    ro.flags.writeable = False
    t = as_nchw(ro, (3, 12, 16))
    assert isinstance(t, np.ndarray) and t.ctypes.data == ro.ctypes.data  # a view, no copy
    table = pq.read_table(root / "x.parquet")
    col = table.column("image").chunks[0]
    arrow_piece = next(iter_array_file(root / "x.arrow", chunk=100))
    assert arrow_piece.shape == (7, 12, 16, 3) and col.type.shape == [12, 16, 3]


def test_array_file_errors_say_what_to_change(data, tmp_path):
    root, x = data
    np.save(tmp_path / "flat.npy", np.zeros((4, 10), np.uint8))
    pq.write_table(pa.table({"a": [1, 2], "b": [3, 4]}), tmp_path / "two.parquet")
    pq.write_table(pa.table({"image": [b"x", b"y"]}), tmp_path / "bytes.parquet")
    save_file({"a": x.numpy(), "b": x.numpy()}, tmp_path / "two.safetensors")
    with Predictor(tiny_model(1), workers=0) as p:
        with pytest.raises(DataReadError, match="expected images"):
            p.predict(tmp_path / "flat.npy")
        with pytest.raises(DataReadError, match="2 columns.*name the images"):
            p.predict(tmp_path / "two.parquet")
        with pytest.raises(DataReadError, match="not a fixed-shape tensor column"):
            p.predict(tmp_path / "bytes.parquet")
        with pytest.raises(DataReadError, match="2 tensors"):
            p.predict(tmp_path / "two.safetensors")
