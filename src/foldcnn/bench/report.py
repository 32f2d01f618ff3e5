"""Benchmark records (one dict per configuration), derived columns, JSON and CSV files.

A record's throughput is the median images/s over trials (all f images of a folded input
counted) with its spread; ``flops_per_s = images_per_s * flops_per_image`` (FLOPs from
``foldcnn.analysis.analyze``: 2 per MAC plus bias adds); ``fraction_of_peak`` divides by the
roof of the record's precision and device (``peak_flops_per_s``, named by ``roof``): the highest
matmul peak measured in the same run on any runtime, or, where a model ran faster than every
matmul measured, that model's FLOP/s, so no fraction reads above 100%;
``ratio_vs_original`` divides by the fold=1 record of the same model, requested image batch
size, backend, precision and device.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from foldcnn.bench.peak import PeakSet
from foldcnn.bench.sweep import BenchResult
from foldcnn.errors import UsageError
from foldcnn.models.base import resolve_channel_multiple
from foldcnn.precision import with_precision_key

__all__ = [
    "RECORD_KEYS",
    "best_batches",
    "build_records",
    "machine_info",
    "read_csv",
    "read_json",
    "write_csv",
    "write_json",
]

# 2: the precision of a record, a best row and a peak is keyed "precision" (1: "dtype").
FORMAT_VERSION = 2
# Column order of records, the CSV file and the JSON records.
RECORD_KEYS = (
    "model", "family", "fold", "width_mult", "channel_multiple", "params", "batch_size", "requested_batch_size",
    "folded_batch", "backend", "precision", "device", "runtime",
    "images_per_s", "images_per_s_min", "images_per_s_q1", "images_per_s_q3", "images_per_s_max", "trials",
    "flops_per_image", "flops_per_s", "bytes_per_image", "arithmetic_intensity",
    "peak_flops_per_s", "roof", "fraction_of_peak", "ratio_vs_original", "best_batch",
)
_INT_KEYS = {"fold", "channel_multiple", "params", "batch_size", "requested_batch_size", "folded_batch", "trials"}
_BOOL_KEYS = {"best_batch"}
_STR_KEYS = {"model", "family", "backend", "precision", "dtype", "device", "runtime", "roof"}


def _series_key(r: dict) -> tuple:
    """Records that differ only in batch size."""
    return (r["model"], r["fold"], r.get("width_mult"), r["channel_multiple"], r["backend"], r["precision"], r["device"])


def is_original(r: dict) -> bool:
    """A record of the original CNN: fold 1 at its own widths (a narrower fold-1 CNN is not)."""
    return r["fold"] == 1 and r.get("width_mult") in (None, 1.0)


def build_records(results: list[BenchResult], peaks: PeakSet | None = None) -> list[dict]:
    """One dict per result with every key of RECORD_KEYS (None where a value is unknown)."""
    records = []
    for res in results:
        c, st = res.config, res.images_per_s
        flops_per_s = st.median * res.flops_per_image
        records.append({
            "model": c.model, "family": res.family, "fold": c.fold,
            "width_mult": round(c.resolved_width_mult, 4),
            "channel_multiple": resolve_channel_multiple(c.channel_multiple) if c.widened else None,
            "params": res.params,
            "batch_size": c.batch_size, "requested_batch_size": c.requested_batch_size,
            "folded_batch": c.folded_batch, "backend": c.backend, "precision": c.precision, "device": c.device,
            "runtime": c.runtime,
            "images_per_s": st.median, "images_per_s_min": st.min, "images_per_s_q1": st.q1,
            "images_per_s_q3": st.q3, "images_per_s_max": st.max, "trials": len(st.values),
            "flops_per_image": res.flops_per_image, "flops_per_s": flops_per_s,
            "bytes_per_image": res.bytes_per_image, "arithmetic_intensity": res.arithmetic_intensity,
            "peak_flops_per_s": None, "roof": None, "fraction_of_peak": None,
            "ratio_vs_original": None, "best_batch": False,
        })
    if peaks is not None:
        add_roofs(records, peaks)
    add_ratios(records)
    mark_best_batches(records)
    return records


def _label(r: dict) -> str:
    return f"{r['model']} f={r['fold']} {r['backend']} B={r['batch_size']}"


def add_roofs(records: list[dict], peaks: PeakSet) -> None:
    """Set ``peak_flops_per_s``, ``roof`` and ``fraction_of_peak`` in place: per (device, precision)
    the roof is the highest matmul peak of that precision on any runtime, raised to the fastest
    record of that precision where one ran faster (the roof then names it)."""
    for device, precision in dict.fromkeys((r["device"], r["precision"]) for r in records):
        mine = [r for r in records if (r["device"], r["precision"]) == (device, precision)]
        top = max(mine, key=lambda r: r["flops_per_s"])
        peak = peaks.roof(device, precision)
        if peak is None:  # no matmul of this precision measured: no roof claimed
            for r in mine:
                r["peak_flops_per_s"], r["roof"], r["fraction_of_peak"] = None, None, None
            continue
        value, name = peak.flops_per_s, f"{peak.runtime} matmul"
        if top["flops_per_s"] > value:
            value, name = top["flops_per_s"], f"model: {_label(top)} (faster than every {precision} matmul measured)"
        for r in mine:
            r["peak_flops_per_s"], r["roof"], r["fraction_of_peak"] = value, name, r["flops_per_s"] / value


def add_ratios(records: list[dict]) -> None:
    """Set ``ratio_vs_original`` = images/s / images/s of the matching fold=1 record, in place."""
    originals = {(r["model"], r["requested_batch_size"], r["backend"], r["precision"], r["device"]): r["images_per_s"]
                 for r in records if is_original(r)}
    for r in records:
        base = originals.get((r["model"], r["requested_batch_size"], r["backend"], r["precision"], r["device"]))
        r["ratio_vs_original"] = r["images_per_s"] / base if base else None


def mark_best_batches(records: list[dict]) -> None:
    """Set ``best_batch`` on the fastest batch size of each (model, fold, width, backend, precision, device)."""
    best: dict[tuple, dict] = {}
    for r in records:
        r["best_batch"] = False
        k = _series_key(r)
        if k not in best or r["images_per_s"] > best[k]["images_per_s"]:
            best[k] = r
    for r in best.values():
        r["best_batch"] = True


def best_batches(records: list[dict]) -> list[dict]:
    """The best-batch record of each (model, fold, width, backend, precision, device), in record order,
    with ``ratio_vs_original_best``: its images/s over the best fold=1 images/s of the same
    model, backend, precision and device (each at its own best batch size)."""
    best = [r for r in records if r["best_batch"]]
    originals = {(r["model"], r["backend"], r["precision"], r["device"]): r["images_per_s"] for r in best if is_original(r)}
    out = []
    for r in best:
        base = originals.get((r["model"], r["backend"], r["precision"], r["device"]))
        out.append({**r, "ratio_vs_original_best": r["images_per_s"] / base if base else None})
    return out


# ---------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine_info(device: str = "cpu") -> dict:
    """CPU model, cores, library versions (and the GPU when ``device`` is cuda)."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    info = {
        "cpu_model": _cpu_model(), "logical_cores": os.cpu_count(), "usable_cores": usable,
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"), "openvino": _version("openvino"),
        "nncf": _version("nncf"), "foldcnn": _version("foldcnn"),
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


# -------------------------------------------------------------------------------- JSON / CSV
def write_json(path: str | os.PathLike, records: list[dict], *, peaks: PeakSet | None = None,
               machine: dict | None = None, skipped: list[dict] | None = None,
               settings: dict | None = None) -> Path:
    """Write one JSON document: ``records`` (the list of per-configuration dicts), ``best``
    (best batch per series), ``peaks``, ``machine``, ``skipped`` and the ``settings`` of the run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": "foldcnn-bench", "format_version": FORMAT_VERSION,
        "machine": machine or {}, "settings": settings or {},
        "peaks": (peaks or PeakSet()).to_dict(),
        "records": [{k: r.get(k) for k in RECORD_KEYS} for r in records],
        "best": [{"model": r["model"], "fold": r["fold"], "width_mult": r.get("width_mult"),
                  "channel_multiple": r["channel_multiple"],
                  "backend": r["backend"], "precision": r["precision"], "device": r["device"],
                  "batch_size": r["batch_size"], "images_per_s": r["images_per_s"],
                  "ratio_vs_original_best": r["ratio_vs_original_best"]} for r in best_batches(records)],
        "skipped": skipped or [],
    }
    path.write_text(json.dumps(doc, indent=2))
    return path


def read_json(path: str | os.PathLike) -> dict:
    """The document written by ``write_json`` (any format_version up to this one, keyed as this one
    writes it); ``peaks`` comes back as a PeakSet."""
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != "foldcnn-bench":
        raise UsageError(f"{path} was not written by foldcnn bench --json")
    if doc.get("format_version", 1) > FORMAT_VERSION:
        raise UsageError(f"{path} is bench JSON format_version {doc['format_version']}, newer than this foldcnn "
                         f"reads ({FORMAT_VERSION}); upgrade foldcnn")
    for key in ("records", "best"):
        doc[key] = [with_precision_key(r) for r in doc.get(key) or []]
    doc["peaks"] = PeakSet.from_dict(doc.get("peaks") or {})
    return doc


def write_csv(path: str | os.PathLike, records: list[dict]) -> Path:
    """One row per record, columns RECORD_KEYS; unknown values are empty cells."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(RECORD_KEYS))
        w.writeheader()
        for r in records:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in RECORD_KEYS})
    return path


def _parse(key: str, text: str):
    if text == "":
        return None
    if key in _STR_KEYS:
        return text
    if key in _BOOL_KEYS:
        return text == "True"
    if key in _INT_KEYS:
        return int(text)
    return float(text)


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Records from ``write_csv`` with their types restored (ints, floats, bools, None)."""
    with Path(path).open(newline="") as fh:
        return [with_precision_key({k: _parse(k, v) for k, v in row.items()}) for row in csv.DictReader(fh)]
