"""The KServe v2 / Open Inference Protocol request and response bodies (REST, JSON and binary).

Triton's, KServe's and Seldon's clients speak it (e.g. ``tritonclient.http``). The model takes
one input tensor, either of:

* ``images``, datatype ``BYTES``, shape ``[N]`` (or ``[N, 1]``): N encoded image files (PNG,
  JPEG, ...), decoded and resized by the server as ``/v1/classify`` does; in JSON each element
  is the file's bytes in base64;
* ``pixels``, datatype ``UINT8``, shape ``[N, C, H, W]`` (the model's C, H, W): decoded pixels,
  no decoding on the server.

and answers the outputs ``class_index`` (INT64 ``[N]``), ``confidence`` (FP32 ``[N]``),
``class_name`` (BYTES ``[N]``) and ``probabilities`` (FP32 ``[N, K]``); all of them unless the
request lists ``outputs``. The binary tensor extension: a request with an
``Inference-Header-Content-Length: L`` header carries L bytes of JSON, then the binary data of
every input whose ``parameters`` hold ``binary_data_size``, in input order (a BYTES tensor as
4-byte little-endian lengths, each followed by its bytes); outputs come back binary when the
request asks (``parameters.binary_data`` per output, or ``binary_data_output`` for all), in the
same layout, with the same header on the response.

Errors raise :class:`foldcnn.serve.validation.RequestError` (a 400 with one sentence naming the
tensor and what was expected).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

from foldcnn.serve.validation import RequestError, check_json_depth

__all__ = ["HEADER_LENGTH", "InferRequest", "OUTPUTS", "parse_infer_request", "infer_response", "model_metadata"]

HEADER_LENGTH = "inference-header-content-length"
# name -> (datatype, numpy dtype); the shapes are [N] except probabilities [N, K]
OUTPUTS = {"class_index": ("INT64", np.int64), "confidence": ("FP32", np.float32), "class_name": ("BYTES", None),
           "probabilities": ("FP32", np.float32)}


@dataclass
class InferRequest:
    """A parsed infer request: exactly one of ``blobs`` (encoded images) and ``pixels`` (uint8
    (N, C, H, W)); the outputs to answer, each with whether it goes back binary."""

    id: str | None
    blobs: list[bytes] | None
    pixels: np.ndarray | None
    outputs: list[tuple[str, bool]]

    @property
    def count(self) -> int:
        return len(self.blobs) if self.blobs is not None else int(self.pixels.shape[0])


def _split_bytes(data: memoryview, count: int, name: str) -> list[bytes]:
    """A binary BYTES tensor (4-byte little-endian length, then the bytes, per element)."""
    out, pos = [], 0
    for i in range(count):
        if pos + 4 > len(data):
            raise RequestError(400, f"input {name!r}: the binary data ends before element {i} of {count}; "
                                    f"each element is a 4-byte little-endian length and then its bytes")
        n = int.from_bytes(data[pos:pos + 4], "little")
        pos += 4
        if pos + n > len(data):
            raise RequestError(400, f"input {name!r}: element {i} declares {n:,} bytes but only "
                                    f"{len(data) - pos:,} are left; send the whole file")
        out.append(bytes(data[pos:pos + n]))
        pos += n
    if pos != len(data):
        raise RequestError(400, f"input {name!r}: {len(data) - pos:,} bytes follow the last of its {count} "
                                f"elements; the shape and the data disagree")
    return out


def _shape(spec: dict, name: str) -> list[int]:
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise RequestError(400, f"input {name!r}: 'shape' must be a list of non-negative ints, got {shape!r}")
    return shape


def parse_infer_request(body: bytes, header_length: str | None, input_shape: tuple[int, int, int]) -> InferRequest:
    """The body of ``POST /v2/models/{name}/infer`` -> :class:`InferRequest` (400 on anything wrong)."""
    head, binary = _split_body(body, header_length)
    doc, spec = _parse_head(head)
    name, datatype = spec.get("name"), spec.get("datatype")
    shape = _shape(spec, str(name))
    size = _binary_size(spec, name, binary)
    blobs = pixels = None
    if name == "images":
        blobs = _image_blobs(spec, datatype, shape, binary if size is not None else None)
    elif name == "pixels":
        pixels = _pixel_array(spec, datatype, shape, input_shape, binary if size is not None else None)
    else:
        c, h, w = input_shape
        raise RequestError(400, f"the model has no input {name!r}; send 'images' (BYTES [N], image files) or "
                                f"'pixels' (UINT8 [N, {c}, {h}, {w}])")
    return InferRequest(id=doc.get("id") if isinstance(doc.get("id"), str) else None, blobs=blobs, pixels=pixels,
                        outputs=_outputs(doc))


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(the JSON header, the binary data after it) by the Inference-Header-Content-Length header."""
    view = memoryview(body)
    if header_length is None:
        return body, view[len(body):]
    if not header_length.isdigit() or int(header_length) > len(body):
        raise RequestError(400, f"the Inference-Header-Content-Length header says {header_length!r} but the "
                                f"body has {len(body):,} bytes; it must be the length of the JSON part")
    return bytes(view[:int(header_length)]), view[int(header_length):]


def _parse_head(head: bytes) -> tuple[dict, dict]:
    """(the request document, its one input's spec)."""
    check_json_depth(head)
    try:
        doc = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the inference request is not valid JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise RequestError(400, 'an inference request is {"inputs": [{"name", "shape", "datatype", "data"}], ...}')
    inputs = doc["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(400, f"the model takes one input ('images' BYTES [N] or 'pixels' UINT8 [N, C, H, W]), "
                                f"got {len(inputs)}")
    return doc, inputs[0]


def _binary_size(spec: dict, name, binary: memoryview) -> int | None:
    """The input's declared binary_data_size (None: its data is in the JSON), checked against the body."""
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise RequestError(400, f"input {name!r}: binary_data_size must be a non-negative int, got {size!r}")
        if size != len(binary):
            raise RequestError(400, f"input {name!r} declares {size:,} bytes of binary data but the body holds "
                                    f"{len(binary):,} after the JSON header")
    elif len(binary):
        raise RequestError(400, f"the body holds {len(binary):,} bytes after the JSON header but no input declares "
                                f"binary_data_size")
    elif "data" not in spec:
        raise RequestError(400, f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    return size


def _image_blobs(spec: dict, datatype, shape: list[int], binary: memoryview | None) -> list[bytes]:
    """Input 'images' (BYTES [N] or [N, 1]) -> the encoded image files, from ``binary`` when given."""
    if datatype != "BYTES":
        raise RequestError(400, f"input 'images' holds encoded image files: datatype BYTES, got {datatype!r}")
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise RequestError(400, f"input 'images' has shape [N] (or [N, 1]), one image file per element; "
                                f"got {shape}")
    count = shape[0]
    if binary is not None:
        return _split_bytes(binary, count, "images")
    data = spec["data"]
    flat = data if isinstance(data, list) and all(isinstance(s, str) for s in data) else \
        [s for row in data for s in row] if isinstance(data, list) and all(
            isinstance(r, list) for r in data) else None
    if flat is None or not all(isinstance(s, str) for s in flat):
        raise RequestError(400, "input 'images': in JSON each element is a base64 string of an image file")
    if len(flat) != count:
        raise RequestError(400, f"input 'images' has shape {shape} but {len(flat)} elements")
    blobs = []
    for i, s in enumerate(flat):
        try:
            blobs.append(base64.b64decode("".join(s.split()), validate=True))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"input 'images' element {i} is not valid base64; send the image file "
                                    f"base64-encoded, or as binary data") from None
    return blobs


def _pixel_array(spec: dict, datatype, shape: list[int], input_shape: tuple[int, int, int],
                 binary: memoryview | None) -> np.ndarray:
    """Input 'pixels' (UINT8 [N, C, H, W]) -> uint8 (N, C, H, W), from ``binary`` when given."""
    c, h, w = input_shape
    if datatype != "UINT8":
        raise RequestError(400, f"input 'pixels' holds uint8 pixels: datatype UINT8, got {datatype!r}")
    if len(shape) != 4 or tuple(shape[1:]) != (c, h, w):
        raise RequestError(400, f"input 'pixels' has shape [N, {c}, {h}, {w}] (the model's channels, height "
                                f"and width), got {shape}")
    count = shape[0]
    if binary is not None:
        if len(binary) != count * c * h * w:
            raise RequestError(400, f"input 'pixels' of shape {shape} needs {count * c * h * w:,} bytes of "
                                    f"binary data, got {len(binary):,}")
        return np.frombuffer(binary, np.uint8).reshape(count, c, h, w).copy()
    try:
        arr = np.asarray(spec["data"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(400, "input 'pixels': 'data' must be a (flat or nested) list of ints 0-255") from None
    if arr.size != count * c * h * w or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise RequestError(400, f"input 'pixels' of shape {shape} needs {count * c * h * w:,} ints 0-255, "
                                f"got {arr.size:,}" + (" outside 0-255" if arr.size == count * c * h * w else ""))
    return arr.astype(np.uint8).reshape(count, c, h, w)


def _outputs(doc: dict) -> list[tuple[str, bool]]:
    params = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
    all_binary = bool(params.get("binary_data_output", False))
    wanted = doc.get("outputs")
    if wanted is None:
        return [(name, all_binary) for name in OUTPUTS]
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise RequestError(400, 'outputs must be a list of {"name": ...}')
    out = []
    for o in wanted:
        if o.get("name") not in OUTPUTS:
            raise RequestError(400, f"the model has no output {o.get('name')!r}; it answers {', '.join(OUTPUTS)}")
        p = o.get("parameters") if isinstance(o.get("parameters"), dict) else {}
        out.append((o["name"], bool(p.get("binary_data", all_binary))))
    return out


def infer_response(req: InferRequest, model_name: str, indices: np.ndarray, probs: np.ndarray,
                   class_names: list[str]) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (the binary extension's header when any output is binary)."""
    n = len(indices)
    conf = probs[np.arange(n), indices].astype(np.float32)
    values = {"class_index": indices.astype(np.int64), "confidence": conf,
              "class_name": [class_names[k] for k in indices.tolist()], "probabilities": probs.astype(np.float32)}
    outputs, chunks = [], []
    for name, binary in req.outputs:
        datatype = OUTPUTS[name][0]
        v = values[name]
        shape = [n, probs.shape[1]] if name == "probabilities" else [n]
        entry = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            raw = b"".join(len(b).to_bytes(4, "little") + b for b in (s.encode() for s in v)) \
                if datatype == "BYTES" else np.ascontiguousarray(v).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = v if isinstance(v, list) else (
                np.round(v, 6).ravel().tolist() if v.dtype == np.float32 else v.ravel().tolist())
        outputs.append(entry)
    doc = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if req.id is not None:
        doc["id"] = req.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    return head + b"".join(chunks), {"content-type": "application/octet-stream",
                                     "inference-header-content-length": str(len(head))}


def model_metadata(model_name: str, input_shape: tuple[int, int, int], num_classes: int) -> dict:
    """``GET /v2/models/{name}``: the inputs and outputs (-1: any batch size)."""
    c, h, w = input_shape
    return {"name": model_name, "versions": ["1"], "platform": "foldcnn",
            "inputs": [{"name": "images", "datatype": "BYTES", "shape": [-1]},
                       {"name": "pixels", "datatype": "UINT8", "shape": [-1, c, h, w]}],
            "outputs": [{"name": "class_index", "datatype": "INT64", "shape": [-1]},
                        {"name": "confidence", "datatype": "FP32", "shape": [-1]},
                        {"name": "class_name", "datatype": "BYTES", "shape": [-1]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, num_classes]}]}
