"""`foldcnn export`: a checkpoint to an ONNX file (+ sidecar) that plain onnxruntime can run."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from foldcnn.cli.common import CLIError
from foldcnn.cli.options import deprecated_alias

# Largest |eager - onnx| logit difference accepted for fp32; exports agree to ~1e-6 in practice.
FP32_TOLERANCE = 1e-3
# int8 below this argmax agreement with fp32 on the calibration images gets a warning.
INT8_MIN_AGREEMENT = 0.95


def _cmd_export(args: argparse.Namespace) -> int:
    from foldcnn.backends import BackendError, check_onnx_parity, export_onnx
    from foldcnn.backends.onnx_export import fold_calibration
    from foldcnn.checkpoints import load_calibration, load_checkpoint

    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        raise CLIError("export needs onnx and onnxruntime: pip install 'foldcnn[export]'")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CLIError(f"{out} exists; pass --force to overwrite it")
    ck = load_checkpoint(args.checkpoint)
    model = ck.model
    calibration = None
    int8 = args.precision == "int8"
    if int8:
        calibration = load_calibration(args.checkpoint)
        if calibration is None:
            raise CLIError(
                f"checkpoint {args.checkpoint} has no calibration images (calibration.safetensors), which "
                "--precision int8 needs; checkpoints written by 'foldcnn train' have them, or save a few hundred uint8 "
                "training images with save_checkpoint(..., calibration_images=images)")
    try:
        export_onnx(model, out, opset=args.opset, int8_calibration=calibration, class_names=ck.class_names)
        # fp32: random inputs at two batch sizes (checks the dynamic batch axis too).
        # int8: the calibration images, where agreement with fp32 means something.
        if calibration is None:
            parity = check_onnx_parity(model, out, batch_sizes=(1, 3))
        else:
            import torch

            parity = check_onnx_parity(model, out, inputs=torch.from_numpy(
                fold_calibration(calibration, model.fold, model.input_shape)))
    except BackendError as e:
        raise CLIError(str(e)) from None
    precision = args.precision
    side = out.with_name(out.name + ".json")
    on = (f"random inputs, batch sizes {parity['batch_sizes']}" if calibration is None
          else f"its {len(calibration)} calibration images")
    print(f"parity of the {precision} file vs torch eager fp32 ({on}): "
          f"max abs logit diff {parity['max_abs_diff']:.3g}, argmax agreement {parity['agreement']:.2%}")
    if not int8 and parity["max_abs_diff"] > FP32_TOLERANCE:
        out.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        raise CLIError(f"the exported model differs from torch by {parity['max_abs_diff']:.3g} "
                       f"(> {FP32_TOLERANCE}); removed {out}. Try another --opset")
    if int8 and parity["agreement"] < INT8_MIN_AGREEMENT:
        print(f"warning: int8 agrees with fp32 on only {parity['agreement']:.1%} of the calibration images; "
              "check accuracy (foldcnn eval) before using it")
    c, h, w = model.input_shape
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {precision}, fold={model.fold}: input 'images' "
          f"(N/{model.fold}, {model.fold * c}, {h}, {w}) -> 'logits' (N/{model.fold}, "
          f"{model.fold * model.num_classes})) and {side}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (fp32 or int8) with a JSON sidecar",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx (the sidecar is <out>.json)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="int8: static quantization (QDQ) calibrated on the checkpoint's stored training images")
    deprecated_alias(p, "--int8", "--precision int8", dest="precision", const="int8")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset; None = the exporter's default, 17")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=_cmd_export)


COMMANDS = [_add_export]
