"""`foldcnn models` and `foldcnn analyze`."""

from __future__ import annotations

import argparse

from foldcnn.cli.common import model_help, CLIError, parse_ints, parse_model_kwargs, parse_width_mult
from foldcnn.cli.options import add_json_flag, write_json_output


# ---------------------------------------------------------------------------------- models
def _cmd_models(args: argparse.Namespace) -> int:
    from foldcnn.models import count_params, create_model, list_models, model_entry

    rows = []
    for name in list_models(args.family):
        e = model_entry(name)
        params = count_params(create_model(name, fold=1))
        rows.append({"model": name, "family": e.family, "input_shape": list(e.input_shape),
                     "classes": e.num_classes, "params": params, "description": e.description})
    if args.json:
        write_json_output(rows, args.json)
        if args.json == "-":
            return 0
    header = f"{'model':28} {'family':9} {'input (C,H,W)':14} {'classes':>7} {'params':>11}  description"
    print(header)
    print("-" * len(header))
    for r in rows:
        shape = "x".join(str(s) for s in r["input_shape"])
        print(f"{r['model']:28} {r['family']:9} {shape:14} {r['classes']:>7} {r['params']:>11,}  {r['description']}")
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo (input shape, classes, parameters)")
    p.add_argument("--family", choices=["game", "noscope", "cifar", "baseline"], help="only this family")
    add_json_flag(p, what="the list")
    p.set_defaults(func=_cmd_models)


# ------------------------------------------------------------------------------- analyze
def _hidden_widths(report) -> str:
    """Distinct hidden widths in call order: conv outputs, then linear outputs but the last."""
    widths = [layer.output_shape[0] for layer in report.layers if layer.kind == "conv"]
    widths += [layer.output_shape[-1] for layer in report.layers[:-1] if layer.kind == "linear"]
    return ",".join(str(w) for w in dict.fromkeys(widths))


def _analyze_records(args: argparse.Namespace) -> tuple[list[dict], object]:
    from foldcnn.analysis import DEVICES, analyze, attainable, measure_peak
    from foldcnn.precision import BYTES_PER_ELEMENT
    from foldcnn.models import DEFAULT_CHANNEL_MULTIPLE, create_model, list_models, model_entry
    from foldcnn.models.base import resolve_width_mult

    if args.all and args.models:
        raise CLIError("give model names or --all, not both")
    names = args.models or list_models()
    for name in names:
        model_entry(name)  # an unknown name fails before any work
    kwargs = parse_model_kwargs(args.model_kwargs)
    width_mult = parse_width_mult(args.width_mult)
    bpe = BYTES_PER_ELEMENT[args.precision]
    cm = args.channel_multiple if args.channel_multiple is not None else DEFAULT_CHANNEL_MULTIPLE
    device = measure_peak(args.precision) if args.device == "measured" else DEVICES.get(args.device)
    if device is not None:
        device.peak(args.precision)  # a precision the device lacks fails before any work
    records = []
    for name in names:
        base = analyze(create_model(name, fold=1, **kwargs), args.batch_size, bpe)
        base_pred = attainable(base, device, args.precision) if device is not None else None
        for f in parse_ints(args.folds, "--folds"):
            wm = resolve_width_mult(f, width_mult)
            r = analyze(create_model(name, fold=f, width_mult=wm, channel_multiple=cm, **kwargs), args.batch_size, bpe)
            rec = {
                "model": name, "fold": f, "width_mult": round(wm, 4), "widths": _hidden_widths(r),
                "width_rounding": "orig" if wm == 1 else ("paper" if cm == 1 else f"x{cm}"),
                "channel_multiple": cm, "params": r.params, "batch_size": r.batch_size,
                "precision": args.precision, "bytes_per_element": bpe,
                "flops_per_image": r.flops_per_image, "bytes_per_image": r.bytes_per_image,
                "arithmetic_intensity": r.arithmetic_intensity,
                "ai_vs_unfolded": r.arithmetic_intensity / base.arithmetic_intensity,
            }
            if device is not None:
                pred = attainable(r, device, args.precision)
                rec.update(device=device.name, images_per_s=pred.images_per_s,
                           flops_per_s=pred.flops_per_s, bound=pred.bound,
                           images_per_s_vs_unfolded=pred.images_per_s / base_pred.images_per_s)
            records.append(rec)
    return records, device


def _cmd_analyze(args: argparse.Namespace) -> int:
    records, device = _analyze_records(args)
    if args.json:
        write_json_output(records, args.json)
        if args.json == "-":
            return 0
    cm = records[0]["channel_multiple"] if records else 1
    rounding = "the paper's exact widths" if cm == 1 else \
        f"widths rounded up to a multiple of {cm} (--channel-multiple 1: the paper's exact widths)"
    print(f"batch {args.batch_size} images, {args.precision} ({records[0]['bytes_per_element'] if records else '?'} "
          f"bytes/element), {rounding}; FLOPs = 2 x MACs + bias adds, conv/linear only")
    if device is not None:
        print(f"device {device.name}: peak {device.peak(args.precision) / 1e12:,.4g} TFLOP/s {args.precision} "
              f"(dense), {device.bytes_per_s / 1e9:,.0f} GB/s; {device.source}")
    head = f"{'model':26} {'fold':>4} {'widths':22} {'params':>10} {'MFLOP/img':>9} {'bytes/img':>10} " \
           f"{'AI':>7} {'AI x':>5}"
    if device is not None:
        head += f" {'images/s':>13} {'bound':7} {'img/s x':>7}"
    print(head)
    print("-" * len(head))
    for r in records:
        widths = f"{r['widths']} ({r['width_rounding']})"
        line = (f"{r['model']:26} {r['fold']:>4} {widths:22} {r['params']:>10,} "
                f"{r['flops_per_image'] / 1e6:>9.2f} {r['bytes_per_image']:>10,.0f} "
                f"{r['arithmetic_intensity']:>7.2f} {r['ai_vs_unfolded']:>5.2f}")
        if device is not None:
            line += f" {r['images_per_s']:>13,.0f} {r['bound']:7} {r['images_per_s_vs_unfolded']:>7.2f}"
        print(line)
    return 0


def _add_analyze(sub) -> None:
    from foldcnn.analysis.roofline import DEVICES
    from foldcnn.precision import BYTES_PER_ELEMENT

    p = sub.add_parser(
        "analyze",
        help="FLOPs, bytes and arithmetic intensity per image (the paper's counting), "
        "with an optional roofline prediction of images/s",
    )
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="zoo model names or your own as package.module:Name (default: all of the zoo)")
    p.add_argument("--model-kwargs", help=model_help("kwargs"))
    p.add_argument("--all", action="store_true", help="every model of the zoo")
    p.add_argument("--folds", default="1,2,3,4", help="comma-separated fold factors (default 1,2,3,4)")
    p.add_argument("--batch-size", type=int, default=1024, help="batch size in images (default 1024)")
    p.add_argument("--precision", choices=list(BYTES_PER_ELEMENT), default="fp16",
                   help="element type of weights and activations (default fp16)")
    p.add_argument("--device", choices=[*DEVICES, "measured"],
                   help="predict images/s on a datasheet device, or on this CPU as measured now")
    p.add_argument("--channel-multiple", type=int, default=None,
                   help="round widened layers up to this multiple (1 = paper's exact widths; default 8)")
    p.add_argument("--width-mult", help=model_help("width_mult") + ", at every --fold")
    add_json_flag(p, what="one record per (model, fold)")
    p.set_defaults(func=_cmd_analyze)


COMMANDS = [_add_models, _add_analyze]
