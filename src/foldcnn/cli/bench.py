"""`foldcnn bench` (throughput sweeps with peaks, tables, JSON/CSV/plots) and `foldcnn tune`."""

from __future__ import annotations

import argparse
import functools
import sys

from foldcnn.cli.common import HelpFormatter, CLIError, model_help, parse_model_kwargs, parse_width_mults
from foldcnn.cli.common import parse_ints as _ints

_TUNE_DESCRIPTION = (
    "Times every candidate build of MODEL (folds x width roundings, identical widths once) at several batch sizes "
    "on every backend/precision usable here, in interleaved trials within a time budget, ranks them by images/s "
    "and prints the winner as a ready-to-run command. With --checkpoint, each row shows what is known of its "
    "accuracy cost.")


# ---------------------------------------------------------------------------------- parsing
def _models(text: str | None) -> tuple[str, ...] | None:
    """Comma-separated model names or family names (game, noscope, cifar, baseline)."""
    if text is None:
        return None
    from foldcnn.models import list_models

    families = {"game", "noscope", "cifar", "baseline"}
    out: list[str] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        out += list_models(item) if item in families else [item]
    return tuple(dict.fromkeys(out))


def _backends(text: str | None, precisions: str | None) -> tuple[tuple[str, str], ...] | None:
    """'eager/fp32,ort/int8' or 'eager,ort' combined with --precision fp32,int8."""
    if text is None and precisions is None:
        return None
    if text is None:
        raise CLIError("--precision needs --backends (e.g. --backends eager,ort --precision fp32,int8)")
    names = [d.strip() for d in (precisions or "fp32").split(",") if d.strip()]
    pairs: list[tuple[str, str]] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if "/" in item:
            name, prec = item.split("/", 1)
            pairs.append((name, prec))
        else:
            pairs += [(item, p) for p in names]
    return tuple(dict.fromkeys(pairs))


def _channel_multiples(text: str | None) -> tuple[int | None, ...] | None:
    """'1,8,default' -> (1, 8, None): 'default' is the zoo's rounding."""
    if text is None:
        return None
    ints = text.replace("default", "")
    return (*(_ints(ints, "--channel-multiples") if ints.strip(", ") else ()), *((None,) if "default" in text else ()))


def _plan(args: argparse.Namespace):
    """(preset, configs): the preset the flags name with the fields the flags give (Preset's fields)."""
    from foldcnn.bench.presets import PRESETS, Preset, preset_configs
    from foldcnn.cli.options import option_values

    preset = "quick" if args.quick else args.preset
    given = option_values(args, Preset)
    backends = _backends(given["backends"], args.precision)
    if args.compile:
        backends = tuple(dict.fromkeys([*(backends or PRESETS[preset].backends), ("compile", "fp32")]))
    parsed = {"models": _models(given["models"]), "folds": _ints(given["folds"], "--folds"),
              "batch_sizes": _ints(given["batch_sizes"], "--batch-sizes"), "backends": backends,
              "channel_multiples": _channel_multiples(given["channel_multiples"]),
              "peak_sizes": _ints(given["peak_sizes"], "--peak-sizes"), "baselines": () if args.no_baselines else None}
    return preset_configs(preset, **{**given, **parsed}, model_kwargs=parse_model_kwargs(args.model_kwargs),
                          width_mults=parse_width_mults(args.width_mults))


# ------------------------------------------------------------------------------------ bench
def _cmd_bench(args: argparse.Namespace) -> int:
    from foldcnn.bench import (
        build_records,
        estimate_seconds,
        machine_info,
        preset_peaks,
        run_sweep,
        skip_unavailable,
    )
    preset, configs = _plan(args)
    if args.trials is not None and args.trials < 1 or args.min_seconds is not None and args.min_seconds <= 0:
        raise CLIError("--trials must be >= 1 and --min-seconds > 0")
    runnable, skipped = skip_unavailable(configs)
    machine = machine_info(preset.device)
    est = estimate_seconds(runnable, preset.trials, preset.min_seconds) + (0 if args.no_peak else 40)
    print(f"foldcnn bench: preset {preset.name}: {len(runnable)} configurations ({len(skipped)} skipped) x "
          f"{preset.trials} trials of >= {preset.min_seconds:g} s, interleaved; estimated {est / 60:.1f} min")
    print(f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, torch {machine['torch']}, "
          f"onnxruntime {machine['onnxruntime'] or 'not installed'}" + (f", GPU {machine['gpu']}" if "gpu" in machine else ""))
    if args.max_minutes is not None and est > 60 * args.max_minutes:
        raise CLIError(f"the estimate ({est / 60:.1f} min) exceeds --max-minutes {args.max_minutes:g}; "
                       "fewer --models/--batch-sizes/--trials or a smaller --min-seconds shortens it")
    sys.stdout.flush()
    peaks = None
    if not args.no_peak and runnable:
        measure = functools.partial(preset_peaks, preset, runnable, threads=args.threads)
        peaks = measure()
    outcome = run_sweep(runnable, trials=preset.trials, min_seconds=preset.min_seconds, threads=args.threads,
                        seed=args.seed, group_by=None if args.interleave == "all" else "model",
                        progress=not args.quiet)
    if peaks is not None:  # again after the sweep: a slow moment of a shared machine must not set the roof
        peaks = peaks.highest(measure())
    skipped += outcome.skipped
    records = build_records(outcome.results, peaks)
    _print_tables(records, peaks, skipped)
    _write_outputs(args, records, peaks, machine, skipped, preset)
    return 0


def _print_tables(records, peaks, skipped) -> None:
    """The sweep's tables: every record, best batches, peers, the headline, peaks, what did not run."""
    from foldcnn.bench.tables import (
        format_best,
        format_headline,
        format_peaks,
        format_peers,
        format_records,
        format_skipped,
    )

    if records:
        print("\nthroughput (median images/s over trials; range = (max - min) / median; all f images of a "
              "folded input counted):")
        print(format_records(records))
        print("\nbest batch size per model, fold, backend and precision:")
        print(format_best(records))
        print("\npeers (fold 1 originals and the paper's scaled baseline at their best batch) vs the best folded model,"
              " per precision, on any engine:")
        print(format_peers(records))
        print("\nheadline: the fastest folded configuration vs the fastest original configuration (any engine, "
              "batch and precision measured; random weights: check bf16/int8 agreement with fp32 on trained "
              "checkpoints, experiments/published/precision_agreement.py):")
        print(format_headline(records))
    if peaks is not None:
        print("\nmeasured in this run (fraction of peak = model FLOP/s / the roof of its precision: the highest "
              "matmul peak of that precision on any runtime, or a model that ran faster still):")
        print(format_peaks(peaks, records))
    if skipped:
        print(f"\n{len(skipped)} configuration(s) not run:")
        print(format_skipped(skipped))


def _write_outputs(args, records, peaks, machine, skipped, preset) -> None:
    from dataclasses import asdict

    from foldcnn.bench import write_csv, write_json

    if args.json:
        from foldcnn.backends.torch_backends import cpu_chunk_mib
        from foldcnn.memory import memory_policy

        from foldcnn.backends.openvino import default_options

        settings = {**asdict(preset), "command": ["foldcnn", *sys.argv[1:]], "threads": args.threads,
                    "seed": args.seed, "interleave": args.interleave, "memory": memory_policy(),
                    "cpu_chunk_mib": f"{cpu_chunk_mib():g}", "openvino": asdict(default_options())}
        write_json(args.json, records, peaks=peaks, machine=machine, settings=settings,
                   skipped=[{"config": c.label(), "reason": why} for c, why in skipped])
        print(f"json: {args.json}")
    if args.csv:
        write_csv(args.csv, records)
        print(f"csv: {args.csv}")
    if args.plots:
        if not records:
            print("plots: nothing was measured, no plots written")
            return
        from foldcnn.bench.peak import PeakSet
        from foldcnn.bench.plots import write_plots

        try:
            paths = write_plots(records, peaks or PeakSet(), args.plots)
        except ImportError as e:
            raise CLIError(str(e)) from None
        print(f"plots: {len(paths)} PNG file(s) in {args.plots}")


def _add_precision(p, help_text: str) -> None:
    p.add_argument("--precision", metavar="PRECISIONS", help=help_text)


def _add_bench(sub) -> None:
    from dataclasses import fields

    from foldcnn.bench.presets import PRESETS, Preset
    from foldcnn.cli.options import add_options
    from foldcnn.infer.options import PredictOptions
    from foldcnn.options import is_cli_option

    p = sub.add_parser(
        "bench", help="throughput sweep: models x folds x batch sizes x backends x precisions, with measured peaks",
        description="Times every configuration in interleaved trials (round-robin, medians and spread), "
        "measures matmul peaks and memory bandwidth in the same run, and prints images/s, FLOP/s, "
        "arithmetic intensity, fraction of peak and the gain over the unfolded CNN. Presets: "
        + "; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()),
        formatter_class=HelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="the sweep to run; the flags below override its fields")
    p.add_argument("--quick", action="store_true", help="same as --preset quick (a few seconds)")
    p.add_argument("--model-kwargs", help=model_help("kwargs"))
    # The sweep's fields (foldcnn.bench.presets.Preset): None keeps the preset's value.
    add_options(p, Preset, defaults={f.name: None for f in fields(Preset) if is_cli_option(f)})
    p.add_argument("--peak-size", dest="peak_sizes", help=argparse.SUPPRESS)  # the singular, as before
    _add_precision(p, "precisions for bare --backends names, comma-separated, e.g. fp32,int8")
    p.add_argument("--compile", action="store_true", help="add torch.compile fp32 to the backends (slow setup)")
    p.add_argument("--width-mults", help="comma-separated width multipliers, each with every fold, e.g. 0.5,1,2 "
                   "(" + model_help("width_mult") + "); default: sqrt(fold)")
    p.add_argument("--no-baselines", action="store_true", help="leave out the paper's scaled baseline models")
    p.add_argument("--interleave", choices=("model", "all"), default="model",
                   help="interleave within each model's configurations (engines freed per model) or all at "
                   "once (all engines alive: memory)")
    add_options(p, PredictOptions, only=("threads",))
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    p.add_argument("--no-peak", action="store_true", help="skip the peak and bandwidth measurement")
    p.add_argument("--max-minutes", type=float, default=None, help="refuse to start if the estimate is longer")
    p.add_argument("--json", help="write the records, peaks, machine and settings as JSON here")
    p.add_argument("--csv", help="write one CSV row per configuration here")
    p.add_argument("--plots", help="write PNG plots (throughput vs batch size, rooflines) into this folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)


# ------------------------------------------------------------------------------------- tune
def _cmd_tune(args: argparse.Namespace) -> int:
    from foldcnn.bench.tables import format_table
    from foldcnn.bench.tune import predict_hint, tune

    if args.model is None and args.checkpoint is None:
        raise CLIError("name the model to tune (e.g. foldcnn tune lol-gold-fraction) or give --checkpoint")
    if args.seconds <= 0:
        raise CLIError(f"--seconds must be > 0, got {args.seconds}")
    backends = _backends(args.backends, args.precision)
    cms = _ints(args.channel_multiples, "--channel-multiples")
    print(f"foldcnn tune: timing {args.model or args.checkpoint} on this machine within about "
          f"{args.seconds:g} s (random weights; candidates with identical widths are timed once)")
    sys.stdout.flush()
    res = tune(args.model, checkpoint=args.checkpoint, folds=_ints(args.folds, "--folds"),
               channel_multiples=cms, batch_sizes=_ints(args.batch_sizes, "--batch-sizes"),
               backends=list(backends) if backends else None, device=args.device, seconds=args.seconds,
               trials=args.trials, threads=args.threads, progress=not args.quiet,
               model_kwargs=parse_model_kwargs(args.model_kwargs))
    for note in res.notes:
        print(f"note: {note}")
    if not res.ranking:
        print("nothing could be timed here:")
        for s in res.skipped:
            print(f"  {s}")
        return 1
    rows = [[str(i + 1), str(r["fold"]), "-" if r["fold"] == 1 else str(r["channel_multiple"]), r["widths"],
             str(r["batch_size"]), r["backend"], r["precision"], f"{r['images_per_s']:,.0f}",
             f"{r['images_per_s_min']:,.0f}-{r['images_per_s_max']:,.0f}", r["accuracy"]]
            for i, r in enumerate(res.ranking[: args.top])]
    print(f"\nranking of {len(res.ranking)} candidates (median images/s of {args.trials} interleaved trials "
          f"of >= {res.min_seconds:.2g} s):")
    print(format_table(["rank", "fold", "width", "conv widths", "batch", "backend", "precision", "images/s",
                        "min-max", "accuracy"], rows))
    w = res.winner
    print(f"\nwinner: {res.model} fold={w['fold']}" + ("" if w["fold"] == 1 else f" channel_multiple={w['channel_multiple']}")
          + f", batch {w['batch_size']} images, {w['backend']}/{w['precision']}: {w['images_per_s']:,.0f} images/s"
          + ("" if w["accuracy"] == "-" else f"; accuracy: {w['accuracy']}"))
    print("run it:")
    for line in predict_hint(res):
        print(f"  {line}")
    if res.skipped:
        print(f"\n{len(res.skipped)} candidate(s) not timed:")
        for s in res.skipped:
            print(f"  {s}")
    return 0


def _add_tune(sub) -> None:
    from foldcnn.bench.presets import Preset
    from foldcnn.cli.options import add_options
    from foldcnn.infer.options import PredictOptions

    p = sub.add_parser("tune", help="measure this machine and pick the fastest fold, width rounding, batch, backend "
                       "and precision", description=_TUNE_DESCRIPTION,
                       formatter_class=HelpFormatter)
    p.add_argument("model", nargs="?", help="zoo model name or package.module:Name (default: the checkpoint's model)")
    p.add_argument("--model-kwargs", help=model_help("kwargs"))
    p.add_argument("--checkpoint", help="checkpoint directory: its model, and accuracy notes from its "
                   "metrics and calibration images")
    p.add_argument("--seconds", type=float, default=60.0, help="time budget (approximate) for the whole run")
    # The candidates, as a bench sweep's fields (foldcnn.bench.presets.Preset), with tune's defaults.
    add_options(p, Preset, only=("folds", "channel_multiples", "batch_sizes", "backends", "device", "trials"),
                defaults={"folds": "1,2,3,4", "channel_multiples": "8,1,16", "batch_sizes": "256,1024",
                          "backends": None, "device": "cpu", "trials": 2},
                helps={"folds": "comma-separated folds to consider",
                       "channel_multiples": "width roundings to consider (1 = paper's widths; the first names ties)",
                       "batch_sizes": "batch sizes in images (every engine is alive at once: 4096 needs ~0.5-1 GB "
                                      "per ONNX Runtime session)",
                       "backends": "backend/precision pairs (default: every pair usable here)",
                       "device": "where the candidates run", "trials": "interleaved trials per candidate"})
    _add_precision(p, "precisions for bare --backends names, comma-separated")
    add_options(p, PredictOptions, only=("threads",))
    p.add_argument("--top", type=int, default=15, help="rows of the ranking to print")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_tune)


COMMANDS = [_add_bench, _add_tune]
