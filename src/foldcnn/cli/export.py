"""`foldcnn export`: a checkpoint to an ONNX file (+ sidecar) that plain onnxruntime can run."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from foldcnn.cli.common import HelpFormatter, CLIError

# Largest |eager - onnx| logit difference accepted for fp32; exports agree to ~1e-6 in practice.
FP32_TOLERANCE = 1e-3
# int8 below this argmax agreement with fp32 on the calibration images gets a warning.
INT8_MIN_AGREEMENT = 0.95


def _cmd_export(args: argparse.Namespace) -> int:
    from foldcnn.checkpoints import load_calibration, load_checkpoint

    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        raise CLIError("export needs onnx and onnxruntime: pip install 'foldcnn[export]'")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    folder = out.parent
    if folder.exists() and (not folder.is_dir() or not os.access(folder, os.W_OK)):
        why = "is a file, not a folder" if not folder.is_dir() else "is not writable"
        raise CLIError(f"cannot write {out}: {folder} {why}")
    ck = load_checkpoint(args.checkpoint)
    model = ck.model
    calibration = None
    if args.precision == "int8":
        calibration = load_calibration(args.checkpoint)
        if calibration is None:
            raise CLIError(
                f"checkpoint {args.checkpoint} has no calibration images (calibration.safetensors), which "
                "--precision int8 needs; checkpoints written by 'foldcnn train' have them, or save a few hundred uint8 "
                "training images with save_checkpoint(..., calibration_images=images)")
    # Written under a staging name and renamed into place only once onnxruntime has run it and
    # agrees with torch: a failed export never leaves a broken (or half-written) --out behind.
    staging = out.with_name(f".{out.name}.partial")
    try:
        parity = _export_checked(model, staging, args, calibration, ck.class_names)
    except BaseException:
        _remove_export(staging)
        raise
    side = out.with_name(out.name + ".json")
    os.replace(staging.with_name(staging.name + ".json"), side)
    os.replace(staging, out)
    precision = args.precision
    on = (f"random inputs, batch sizes {parity['batch_sizes']}" if calibration is None
          else f"its {len(calibration)} calibration images")
    print(f"parity of the {precision} file vs torch eager fp32 ({on}): "
          f"max abs logit diff {parity['max_abs_diff']:.3g}, argmax agreement {parity['agreement']:.2%}")
    if args.precision == "int8" and parity["agreement"] < INT8_MIN_AGREEMENT:
        print(f"warning: int8 agrees with fp32 on only {parity['agreement']:.1%} of the calibration images; "
              "check accuracy (foldcnn eval) before using it")
    c, h, w = model.input_shape
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {precision}, fold={model.fold}: input 'images' "
          f"(N/{model.fold}, {model.fold * c}, {h}, {w}) -> 'logits' (N/{model.fold}, "
          f"{model.fold * model.num_classes})) and {side}")
    return 0


def _export_checked(model, path: Path, args: argparse.Namespace, calibration, class_names) -> dict:
    """Export to ``path`` (+ sidecar) and check it against eager torch in onnxruntime; returns the parity."""
    from foldcnn.backends import BackendError, check_onnx_parity, export_onnx
    from foldcnn.backends.onnx_export import fold_calibration

    try:
        export_onnx(model, path, opset=args.opset, int8_calibration=calibration, class_names=class_names)
    except BackendError as e:
        raise CLIError(str(e)) from None
    try:
        # fp32: random inputs at two batch sizes (checks the dynamic batch axis too).
        # int8: the calibration images, where agreement with fp32 means something.
        if calibration is None:
            parity = check_onnx_parity(model, path, batch_sizes=(1, 3))
        else:
            import torch

            parity = check_onnx_parity(model, path, inputs=torch.from_numpy(
                fold_calibration(calibration, model.fold, model.input_shape)))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for graphs it cannot run
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(f"onnxruntime cannot run the exported file ({first}); nothing was written to {args.out}: "
                       "try another --opset") from None
    if args.precision != "int8" and parity["max_abs_diff"] > FP32_TOLERANCE:
        raise CLIError(f"the exported model differs from torch by {parity['max_abs_diff']:.3g} "
                       f"(> {FP32_TOLERANCE}); nothing was written to {args.out}. Try another --opset")
    return parity


def _remove_export(staging: Path) -> None:
    staging.unlink(missing_ok=True)
    staging.with_name(staging.name + ".json").unlink(missing_ok=True)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (fp32 or int8) with a JSON sidecar",
                       formatter_class=HelpFormatter)
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx (the sidecar is <out>.json)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="int8: static quantization (QDQ) calibrated on the checkpoint's stored training images")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset; None = the exporter's default, 17")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_export)


def _cmd_extract(args: argparse.Namespace) -> int:
    from foldcnn.errors import OutputExistsError
    from foldcnn.workflows.extract import write_slot_checkpoint

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise OutputExistsError(f"{out} is not empty; pass --overwrite to replace it or choose another --out")
    done = write_slot_checkpoint(args.checkpoint, out)
    print(f"wrote {done['checkpoint']}: the fold-1 slot CNN of a fold-{done['fold']} model "
          f"(width x{done['width_mult']:.3g}, {done['params']:,} parameters); its logits equal the folded model's "
          f"per image within {done['max_abs_logit_diff']:.1e}")
    return 0


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="write the fold-1 slot CNN of a folded checkpoint trained with "
                       "--cross-slot-decay inf (same answers per image)",
                       description="A folded model trained with --cross-slot-decay inf is f copies of one narrower "
                       "CNN side by side; this writes that CNN as a fold-1 checkpoint, checked to give every image "
                       "the same logits. A model with weights between fold slots is refused.")
    p.add_argument("checkpoint", help="folded checkpoint directory")
    p.add_argument("--out", required=True, help="directory of the fold-1 checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=_cmd_extract)


COMMANDS = [_add_export, _add_extract]
