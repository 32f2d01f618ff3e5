"""Inputs that need no decoding: uint8 image arrays in ``.npy``, ``.safetensors``, Parquet and
Arrow IPC files, read in pieces of (n, C, H, W) or (n, H, W, C) without a per-image step.

* ``.npy``: one 4-D array, memory-mapped copy-on-write (``np.load(mmap_mode="c")``): pages are
  read as the pipeline reaches them and nothing is copied until the engine's float batch.
* ``.safetensors``: the tensor named ``images`` (or ``image``), or the only tensor; memory-mapped
  the same way (the format is an 8-byte length, a JSON header and raw little-endian data).
* ``.parquet``, ``.arrow`` / ``.feather`` (Arrow IPC): the column named ``image`` (or
  ``images``), or the only column, holding fixed-shape tensors: Arrow's ``fixed_shape_tensor``
  extension or Ray Data's tensor column (``ray.data.arrow_tensor``; read without Ray from the
  shape it records). Parquet is read one row group at a time; Arrow IPC files are memory-mapped.

pyarrow is needed only for Parquet / Arrow files (``pip install pyarrow``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from foldcnn.data.readers import DataReadError
from foldcnn.errors import MissingExtraError

__all__ = ["ARRAY_EXTENSIONS", "count_array_file", "is_array_file", "iter_array_file"]

ARRAY_EXTENSIONS = (".npy", ".safetensors", ".parquet", ".arrow", ".feather")
_NAMES = ("images", "image")
# safetensors dtype names -> numpy (https://github.com/huggingface/safetensors, format section)
_ST_DTYPES = {"U8": np.uint8, "I8": np.int8, "F16": np.float16, "F32": np.float32, "F64": np.float64}


def is_array_file(path: Path) -> bool:
    return path.suffix.lower() in ARRAY_EXTENSIONS


def _pick(names: list[str], path: Path, what: str) -> str:
    for n in _NAMES:
        if n in names:
            return n
    if len(names) == 1:
        return names[0]
    raise DataReadError(f"{path} holds {len(names)} {what}s ({', '.join(names[:8])}); name the images "
                        f"{' or '.join(repr(n) for n in _NAMES)}, or keep one {what} in the file")


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except ValueError as e:
        raise DataReadError(f"cannot read {path}: {e}") from None


def _safetensors(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DataReadError(f"cannot read {path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise DataReadError(f"cannot read {path}: its safetensors header is not JSON ({e})") from None
    header.pop("__metadata__", None)
    name = _pick(sorted(header), path, "tensor")
    info = header[name]
    dtype = _ST_DTYPES.get(info["dtype"])
    if dtype is None:
        raise DataReadError(f"{path}: tensor {name!r} is {info['dtype']}; images must be U8 (0-255) or float")
    begin, end = info["data_offsets"]
    shape = tuple(int(s) for s in info["shape"])
    if end - begin != int(np.prod(shape)) * np.dtype(dtype).itemsize:
        raise DataReadError(f"cannot read {path}: tensor {name!r} has {end - begin} bytes for shape {shape}")
    if end == begin:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="c", offset=8 + n + begin, shape=shape)


def _import_pyarrow():
    try:
        import pyarrow as pa
    except ImportError:
        raise MissingExtraError("reading Parquet / Arrow files needs pyarrow: pip install pyarrow") from None
    return pa


def _tensor_shape(field, path: Path) -> tuple[int, ...]:
    """Element shape of a tensor column: from its extension type, or the shape an unregistered
    extension (Ray's, read without Ray) recorded in the field metadata."""
    shape = getattr(field.type, "shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    meta = field.metadata or {}
    raw = meta.get(b"ARROW:extension:metadata")
    if raw is not None:
        try:
            shape = json.loads(raw)
            shape = shape.get("shape") if isinstance(shape, dict) else shape
            return tuple(int(s) for s in shape)
        except (ValueError, TypeError, AttributeError):
            pass
    raise DataReadError(f"{path}: column {field.name!r} ({field.type}) is not a fixed-shape tensor column; store "
                        "the images as pyarrow.FixedShapeTensorArray.from_numpy_ndarray(images) (uint8 (N, H, W, "
                        "C) or (N, C, H, W)) or as a Ray Data tensor column")


def _column_pieces(batches, field, path: Path) -> Iterator[np.ndarray]:
    shape = _tensor_shape(field, path)
    for column in batches:
        storage = column.storage if hasattr(column, "storage") else column
        if column.null_count:
            raise DataReadError(f"{path}: column {field.name!r} has {column.null_count} missing images")
        values = storage.flatten()
        try:
            flat = values.to_numpy(zero_copy_only=True)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for non-numeric values
            raise DataReadError(f"{path}: column {field.name!r} does not hold numbers ({e})") from None
        yield flat.reshape(len(column), *shape)


def _arrow_pieces(path: Path) -> Iterator[np.ndarray]:
    pa = _import_pyarrow()
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        name = _pick(schema.names, path, "column")
        field = schema.field(name)
        groups = (pf.read_row_group(i, columns=[name]).column(0) for i in range(pf.num_row_groups))
        yield from _column_pieces((c for g in groups for c in g.chunks), field, path)
        return
    import pyarrow.ipc as ipc

    with pa.memory_map(str(path)) as source:
        try:
            reader = ipc.open_file(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = ipc.open_stream(source)
        schema = reader.schema
        name = _pick(schema.names, path, "column")
        field = schema.field(name)
        index = schema.get_field_index(name)
        if hasattr(reader, "num_record_batches"):
            batches = (reader.get_batch(i).column(index) for i in range(reader.num_record_batches))
        else:
            batches = (b.column(index) for b in reader)
        yield from _column_pieces(batches, field, path)


def iter_array_file(path: str | Path, chunk: int = 1024) -> Iterator[np.ndarray]:
    """Pieces of at most ``chunk`` images (4-D arrays, views where the format allows) of an
    array file, in file order. Layout and dtype are checked by the caller (as for arrays)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            pieces: Iterator[np.ndarray] = iter([_npy(path)])
        elif suffix == ".safetensors":
            pieces = iter([_safetensors(path)])
        else:
            pieces = _arrow_pieces(path)
        for a in pieces:
            if a.ndim != 4:
                raise DataReadError(f"{path} holds an array of shape {a.shape}; expected images (N, C, H, W) or "
                                    "(N, H, W, C)")
            for start in range(0, a.shape[0], chunk):
                yield a[start:start + chunk]
    except OSError as e:
        raise DataReadError(f"cannot read {path}: {e}") from None


def count_array_file(path: str | Path) -> int | None:
    """Images in an array file, from its header (None where that needs a scan)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            return int(_npy(path).shape[0])
        if path.suffix.lower() == ".safetensors":
            return int(_safetensors(path).shape[0])
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # noqa: BLE001 - a count for a progress bar only; reading reports the error
        return None
    return None
