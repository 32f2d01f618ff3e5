import pytest
import torch

from foldcnn.precision import BYTES_PER_ELEMENT, HALF_PRECISIONS, TORCH_DTYPES, cast_dtype, torch_dtype


def test_dtype_table_agrees_with_torch():
    for name, dtype in TORCH_DTYPES.items():
        assert torch_dtype(name) is dtype
        assert BYTES_PER_ELEMENT[name] == dtype.itemsize
    assert BYTES_PER_ELEMENT["tf32"] == BYTES_PER_ELEMENT["fp32"]  # tf32 is fp32 in memory
    assert BYTES_PER_ELEMENT["int8"] == torch.int8.itemsize


def test_cast_dtype_only_for_half_precisions():
    assert [cast_dtype(p) for p in HALF_PRECISIONS] == [torch.bfloat16, torch.float16]
    assert cast_dtype("fp32") is None and cast_dtype("int8") is None


def test_unknown_precision_names_the_known_ones():
    with pytest.raises(KeyError, match="fp32, fp16, bf16"):
        torch_dtype("int8")


def test_precision_names_validation_and_order():
    from foldcnn.errors import UsageError
    from foldcnn.precision import PRECISIONS, check_precision, precision_rank

    assert set(PRECISIONS) < set(BYTES_PER_ELEMENT) and check_precision("int8") == "int8"
    with pytest.raises(UsageError, match="precision must be one of fp32, tf32, bf16, fp16, int8, got 'fp64'"):
        check_precision("fp64")
    assert sorted(["int8", "x", "fp16", "fp32", "bf16"], key=precision_rank) == ["fp32", "bf16", "fp16", "int8", "x"]


def test_records_keyed_dtype_before_0_2_are_keyed_precision():
    from foldcnn.precision import with_precision_key

    old = {"model": "m", "dtype": "int8", "images_per_s": 1.0}
    assert list(with_precision_key(old).items()) == [("model", "m"), ("precision", "int8"), ("images_per_s", 1.0)]
    new = {"model": "m", "precision": "int8"}
    assert with_precision_key(new) is new


def test_no_precision_is_named_dtype():
    """A precision name (fp32, int8, ...) is held under `precision`, never `dtype`: no "dtype" key and no
    `dtype: str` field or parameter in the package, except the reader of files written before 0.2.0
    and safetensors headers, whose "dtype" is a real element type."""
    import re
    from pathlib import Path

    import foldcnn

    allowed = {"precision.py", "bench/report.py", "infer/array_files.py"}
    root = Path(foldcnn.__file__).parent
    found = [f"{p.relative_to(root)}:{i}" for p in sorted(root.rglob("*.py")) if str(p.relative_to(root)) not in allowed
             for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"[\"']dtype[\"']|\bdtype: str\b", line)]
    assert found == []


def test_importing_precision_needs_no_torch():
    """The torch-free runtime (foldcnn.infer.options) takes its precision names from here."""
    import subprocess
    import sys

    code = ("import sys; import foldcnn.precision, foldcnn.infer.options as o; "
            "assert o.PRECISIONS is foldcnn.precision.PRECISIONS; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
