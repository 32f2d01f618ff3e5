"""`foldcnn predict`: classify an image folder, a glob, one image or a video with a checkpoint."""

from __future__ import annotations

import argparse

from foldcnn.cli.common import BACKEND_CHOICES, PRECISION_CHOICES, CLIError


def _summary_lines(stats, out: str) -> list[str]:
    s = stats
    lines = [
        (f"{s.images:,} images in {s.seconds_total:.2f} s: {s.images_per_s:,.0f} images/s end to end, "
         f"{s.model_images_per_s:,.0f} images/s model only"),
        (f"backend {s.backend}/{s.precision}, fold {s.fold}, batch {s.batch_size} images; padding: "
         f"{s.padded_images} padded images (waste {s.padding_waste:.2%})"
         + (f", {s.fallback_images} images through the fallback model" if s.fallback_images else "")),
    ]
    if s.backend_selection:
        rates = s.backend_selection.get("images_per_s") or {}
        lines.append("auto picked " + str(s.backend_selection.get("picked", s.backend)) + (
            " (" + ", ".join(f"{k}: {v:,.0f} images/s" for k, v in rates.items()) + ")" if rates else ""))
    lines.append(f"skipped {s.skipped} file(s)" + (":" if s.skipped else ""))
    lines += [f"  {x.source} ({x.reason})" for x in s.skipped_inputs]
    if s.ignored_files:
        few = ", ".join(s.ignored_files[:5]) + (", ..." if len(s.ignored_files) > 5 else "")
        lines.append(f"ignored {len(s.ignored_files)} file(s) without an image extension: {few}")
    lines.append(f"wrote {out}")
    return lines


def _run_ray(args: argparse.Namespace) -> int:
    try:
        from foldcnn.scaleout.ray_engine import run_ray_predict
    except ImportError as e:
        raise CLIError(f"--engine ray needs foldcnn.scaleout.ray_engine and ray (pip install 'foldcnn[ray]'): {e}") \
            from None
    try:
        result = run_ray_predict(args.checkpoint, args.input, args.out, address=args.address,
                                 batch_size=args.batch_size, backend=args.backend, on_error=args.on_error,
                                 progress=not args.quiet)
    except ImportError as e:
        raise CLIError(f"--engine ray needs ray (pip install 'foldcnn[ray]'): {e}") from None
    for key, value in (result or {}).items():
        print(f"{key}: {value}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return _run_ray(args)
    if args.address:
        raise CLIError("--address is only used with --engine ray")
    from foldcnn.infer.results import OUTPUT_FORMATS

    if not any(args.out.lower().endswith(ext) for ext in OUTPUT_FORMATS):
        raise CLIError(f"--out must end in {' or '.join(OUTPUT_FORMATS)} (the format), got {args.out!r}")
    partial = args.partial or ("fallback" if args.fallback else "pad")
    if partial == "fallback" and not args.fallback:
        raise CLIError("--partial fallback needs --fallback CKPT (an unfolded checkpoint of the same task)")
    try:
        return _predict_local(args, partial)
    except ImportError as e:  # an optional engine (onnxruntime, av) that is not installed
        raise CLIError(f"{e}; install the extra it names (e.g. pip install 'foldcnn[export,video]')") from None


def _predict_local(args: argparse.Namespace, partial: str) -> int:
    from foldcnn.infer import PredictionWriter, Predictor

    with Predictor.from_checkpoint(
            args.checkpoint, backend=args.backend, precision=args.precision, batch_size=args.batch_size,
            partial=partial, fallback=args.fallback, workers=args.workers, on_error=args.on_error,
            resize=not args.no_resize, resize_mode=args.resize_mode, threads=args.threads,
            device=args.device) as p:
        with PredictionWriter(args.out) as writer:
            writer.write_all(p.predict_iter(args.input, stride=args.stride, progress=not args.quiet))
        for line in _summary_lines(p.stats, args.out):
            print(line)
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify images, a folder, a glob or a video with a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Writes one row per input image in input order: index, source, frame "
                       "(video frame number), class_name, class_index, confidence.")
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--input", required=True,
                   help="an image folder (recursive), a quoted glob ('frames/*.png'), one image, or a video file")
    p.add_argument("--out", required=True, help="output file, .csv or .jsonl (with --engine ray: a directory)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="eager",
                   help="inference engine; auto measures the usable ones briefly and keeps the fastest")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                   help="int8 = ONNX Runtime static quantization calibrated on the checkpoint's stored images")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs")
    p.add_argument("--batch-size", type=int, default=1024, help="images per model call (rounded to a multiple of f)")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (0 = decode in the main thread)")
    p.add_argument("--threads", type=int, default=None, help="the engine's compute threads (None: all cores)")
    p.add_argument("--partial", choices=("pad", "fallback"), default=None,
                   help="last partial fold: zero-pad it, or run its images through --fallback "
                   "(None: fallback when --fallback is given, else pad)")
    p.add_argument("--fallback", default=None, help="unfolded (fold=1) checkpoint of the same task for --partial fallback")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="unreadable files: stop with an error, or skip them (listed at the end)")
    p.add_argument("--no-resize", action="store_true",
                   help="error on images whose size differs from the model's instead of resizing them")
    p.add_argument("--resize-mode", choices=("bilinear", "nearest"), default=None,
                   help="how inputs of another size are resized (None: bilinear for images, nearest for "
                   "video frames, as foldcnn.data.readers.load_video)")
    p.add_argument("--stride", type=int, default=1, help="video: classify every N-th frame")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: a Ray cluster (foldcnn.scaleout)")
    p.add_argument("--address", default=None, help="Ray cluster address for --engine ray (None: start one locally)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)


COMMANDS = [_add_predict]
