"""`foldcnn predict`: classify an image folder, a glob, one image or a video with a checkpoint."""

from __future__ import annotations

import argparse
import sys

from foldcnn.cli.common import HelpFormatter, CLIError
from foldcnn.cli.options import add_json_flag, add_predict_options, predict_options, write_json_output


def _summary_lines(stats, out: str) -> list[str]:
    s = stats
    lines = [
        (f"{s.images:,} images in {s.seconds_total:.2f} s: {s.images_per_s:,.0f} images/s end to end, "
         f"{s.model_images_per_s:,.0f} images/s model only"),
        (f"backend {s.backend}/{s.precision}, fold {s.fold}, batch {s.batch_size} images; padding: "
         f"{s.padded_images} padded images (waste {s.padding_waste:.2%})"
         + (f", {s.fallback_images} images through the fallback model" if s.fallback_images else "")),
    ]
    lines += _stage_lines(s)
    if s.graph_cache:
        lines.append(s.graph_cache["note"])
    if s.backend_selection:
        rates = s.backend_selection.get("images_per_s") or {}
        lines.append("auto picked " + str(s.backend_selection.get("picked", s.backend)) + (
            " (" + ", ".join(f"{k}: {v:,.0f} images/s" for k, v in rates.items()) + ")" if rates else ""))
    lines.append(f"skipped {s.skipped} file(s)" + (":" if s.skipped else ""))
    lines += [f"  {x.source} ({x.reason})" for x in s.skipped_inputs]
    if s.incomplete_inputs:
        lines.append(f"incomplete {len(s.incomplete_inputs)} video(s) (rows written up to the cut):")
        lines += [f"  {x.source} ({x.reason})" for x in s.incomplete_inputs]
    if s.ignored_files:
        few = ", ".join(s.ignored_files[:5]) + (", ..." if len(s.ignored_files) > 5 else "")
        lines.append(f"ignored {len(s.ignored_files)} file(s) without an image extension: {few}")
    lines.append(f"wrote {out}")
    return lines


def _inputs(args: argparse.Namespace):
    """One input as given (a folder, glob, file), several as a list read in order."""
    return args.input[0] if len(args.input) == 1 else list(args.input)


def _stage_lines(s) -> list[str]:
    """One line per stage: seconds, images/s over them, share of wall time; then the bottleneck."""
    if s.decoders == "inline":
        where = "decoded in this thread"
    elif s.images_decoded_in_processes:
        where = f"{s.images_decoded_in_processes:,} images in {s.workers} decoding processes"
    else:
        where = "decoded in background threads"
    lines = []
    for name, st in s.stages().items():
        if name == "other" and st["share"] < 0.05:
            continue
        note = ""
        if name == "read/decode":
            note = f" waiting for input ({where}"
            if s.seconds_decode_work > 0:
                note += f"; {s.images / s.seconds_decode_work:,.0f} images/s per decoder"
            note += ")"
        lines.append(f"  {name}: {st['seconds']:.2f} s{note}, {st['images_per_s']:,.0f} images/s, "
                     f"{st['share']:.0%} of wall time")
    if s.decode_bound:
        from foldcnn.backends.base import default_threads

        cores = default_threads(None)
        more = f"more --workers (now {s.workers}, on {cores} cores) or " if s.workers < cores else ""
        from foldcnn.data.readers import fast_png_available

        png = "" if fast_png_available() else "pip install 'foldcnn[png]' (PNGs decoded about 2x faster), "
        lines.append("  decode-bound: the model waited longer for decoded images than it computed; "
                     f"{more}{png}inputs that need no decoding (.npy, .safetensors, Parquet) would help")
    return lines


def _run_ray(args: argparse.Namespace, options) -> int:
    try:
        from foldcnn.scaleout.ray_engine import run_ray_predict
    except ImportError as e:
        raise CLIError(f"--engine ray needs foldcnn.scaleout.ray_engine and ray (pip install 'foldcnn[ray]'): {e}") \
            from None
    try:
        result = run_ray_predict(args.checkpoint, _inputs(args), args.out, options, address=args.address,
                                 progress=not args.quiet)
    except ImportError as e:
        raise CLIError(f"--engine ray needs ray (pip install 'foldcnn[ray]'): {e}") from None
    for key, value in (result or {}).items():
        print(f"{key}: {value}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    options = predict_options(args)
    if args.engine == "ray" and args.resume:
        raise CLIError("--resume is for the local engine; the Ray engine writes its output directory in one go")
    if args.engine == "ray":
        return _run_ray(args, options)
    if args.address:
        raise CLIError("--address is only used with --engine ray")
    from foldcnn.infer.results import OUTPUT_FORMATS

    if not any(args.out.lower().endswith(ext) for ext in OUTPUT_FORMATS):
        raise CLIError(f"--out must end in {' or '.join(OUTPUT_FORMATS)} (the format), got {args.out!r}")
    try:
        return _predict_local(args, options)
    except ImportError as e:  # an optional engine (onnxruntime, av) that is not installed
        raise CLIError(f"{e}; install the extra it names (e.g. pip install 'foldcnn[export,video]')") from None


# Options whose values change the rows written (the rest change only speed): part of an output's
# fingerprint, so that --resume never continues an output with other rows.
_ROW_OPTIONS = ("device", "partial", "fallback", "on_error", "resize", "resize_mode", "stride", "keyframes",
                "max_pixels")


def _model_identity(model: str) -> str:
    """SHA-256 of what the model computes: an .onnx file's bytes, a checkpoint's weights and config."""
    import hashlib
    from pathlib import Path

    from foldcnn.backends.graphs import is_onnx_path

    if is_onnx_path(model):
        return hashlib.sha256(Path(model).read_bytes()).hexdigest()
    from foldcnn.backends.graph_cache import graph_key

    return graph_key(model, "model")


def _fingerprint(args: argparse.Namespace, options, stats) -> dict:
    """What the output's rows depend on: the model, the engine it ran on, the inputs, row options."""
    import os

    chosen = options.to_dict()
    return {"model": _model_identity(args.checkpoint), "engine": f"{stats.backend}/{stats.precision}",
            "inputs": [os.path.abspath(x) if os.path.exists(x) else x for x in args.input],
            "options": {k: chosen[k] for k in _ROW_OPTIONS}}


def _predict_local(args: argparse.Namespace, options) -> int:
    from foldcnn.infer import Predictor
    from foldcnn.infer.journal import ResumableWriter

    with Predictor.from_checkpoint(args.checkpoint, options) as p:
        # Always journaled, so that a run killed without --resume can be resumed.
        with ResumableWriter(args.out, _fingerprint(args, options, p.stats), resume=args.resume) as writer:
            kept = writer.rows
            p.predict_to(writer, _inputs(args), progress=not args.quiet, resume_after=writer.resume_after)
        if args.json != "-":
            if args.resume:
                print(f"resumed: {kept:,} row(s) kept from the interrupted run (inputs up to position "
                      f"{writer.resume_after if kept else -1}), {writer.rows - kept:,} written now")
            for line in _summary_lines(p.stats, args.out):
                print(line)
        if args.json is not None:
            write_json_output({"out": args.out, "options": options.to_dict(), **p.stats.to_dict()}, args.json)
        return _partial_status(p.stats, args.allow_partial)


def _partial_status(stats, allow_partial: bool) -> int:
    """Exit status 1 when a video was cut short (its rows are written), unless --allow-partial."""
    if stats.incomplete_inputs and not allow_partial:
        print(f"foldcnn predict: {len(stats.incomplete_inputs)} video(s) incomplete; exit status 1 "
              "(pass --allow-partial to accept them)", file=sys.stderr)
        return 1
    return 0



def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify images, a folder, a glob or a video with a checkpoint",
                       formatter_class=HelpFormatter,
                       description="Writes one row per input image in input order: index, source, frame "
                       "(video frame number), class_name, class_index, confidence.")
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json), or an exported graph "
                   "MODEL.onnx with its sidecar MODEL.onnx.json (runs on ort or openvino without torch)")
    p.add_argument("--input", required=True, nargs="+", action="extend",
                   help="image folders (recursive: images and videos), quoted globs ('frames/*.png'), images, "
                        "video files, or uint8 images that need no decoding (.npy, .safetensors, Parquet or Arrow "
                        "with a column 'image'); one or more, read in the order given")
    p.add_argument("--out", required=True, help="output file, .csv or .jsonl (with --engine ray: a directory)")
    add_predict_options(p)
    p.add_argument("--allow-partial", action="store_true",
                   help="with --on-error skip: exit 0 even when a video decodes fewer frames than its container "
                   "declares (its rows up to the cut are written and it is listed as incomplete; default: exit 1)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: a Ray cluster (foldcnn.scaleout)")
    p.add_argument("--address", default=None, help="Ray cluster address for --engine ray (None: start one locally)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: keep the rows of OUT.partial up to its journal's last commit "
                        "and skip those inputs (refused when the model, inputs or row options differ)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(p, what="the run's summary (counts, per-stage seconds, options)")
    p.set_defaults(func=_cmd_predict)


COMMANDS = [_add_predict]
