"""Named benchmark sweeps: the comparisons the project reports, runnable by one flag.

    foldcnn bench --preset cpu-targets --json bench.json --plots plots/   # the CPU comparison
    foldcnn bench --quick                                               # smoke test, seconds
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from foldcnn.analysis.roofline import PEAK_SIZES
from foldcnn.bench.configs import BenchConfig, make_configs
from foldcnn.bench.peak import PeakSet, measure_peaks
from foldcnn.errors import UnknownNameError
from foldcnn.models.game import GAME_TASKS
from foldcnn.options import option

__all__ = ["DEFAULT_BATCH_SIZES", "PRESETS", "Preset", "preset_configs", "preset_peaks"]

GAME_MODELS = tuple(GAME_TASKS)
BASELINES = tuple(f"{m}-scaled" for m in GAME_MODELS)  # the paper's compound-scaled baseline
DEFAULT_BATCH_SIZES = (1, 16, 64, 256, 1024, 4096)  # images


@dataclass(frozen=True)
class Preset:
    """A sweep: models x folds x batch sizes x (backend, precision), plus baselines at fold 1.

    The fields with a help text are ``foldcnn bench``'s flags (foldcnn.cli.options.add_options; a
    given flag replaces the preset's value): lists are comma-separated on the command line."""

    name: str = option(cli=False)
    description: str = option(cli=False)
    models: tuple[str, ...] = option(help="comma-separated model names or families (game, noscope, cifar, "
                                          "baseline), or your own CNN as package.module:Name")
    folds: tuple[int, ...] = option(help="comma-separated folds, e.g. 1,2,3,4")
    batch_sizes: tuple[int, ...] = option(help="comma-separated batch sizes in IMAGES (rounded up to a multiple "
                                               "of f)")
    backends: tuple[tuple[str, str], ...] = option(help="comma-separated backend/precision pairs (eager/fp32,"
                                                        "ort/int8) or backend names combined with --precision")
    device: str = option("cpu", "device (default: the preset's)", choices=("cpu", "cuda"))
    # Run at fold 1 only (they are peers, not folded models); --no-baselines empties them.
    baselines: tuple[str, ...] = option((), cli=False)
    baseline_batch_sizes: tuple[int, ...] | None = option(None, cli=False)  # default: batch_sizes
    channel_multiples: tuple[int | None, ...] = option((None,), "width rounding of folded models, e.g. 1,8,16 (1 = "
                                                               "paper's widths; 'default': the zoo's rounding)")
    trials: int = option(3, "interleaved trials per configuration (default: the preset's)")
    min_seconds: float = option(0.2, "length of each timed block in seconds (default: the preset's)")
    peak_sizes: tuple[int, ...] = option(PEAK_SIZES, "matrix sizes of the peak matmuls, comma-separated; each "
                                         "peak is the fastest of them, measured before and after the sweep "
                                         "(default: the preset's; 1024,2048,3072,4096 on CPU)")
    copy_mib: int = option(128, cli=False)  # the copy whose time gives the memory bandwidth
    peak_repeats: int = option(5, cli=False)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("default", "game CNNs, folds 1-4, batch 1-4096 images, torch eager and ONNX Runtime fp32, "
           "plus the paper's scaled baselines", GAME_MODELS, (1, 2, 3, 4), DEFAULT_BATCH_SIZES,
           (("eager", "fp32"), ("ort", "fp32")), baselines=BASELINES),
    Preset("quick", "smoke test: one small game CNN, folds 1 and 2, two tiny batches, torch eager",
           ("sot-coin-count",), (1, 2), (8, 32), (("eager", "fp32"),), baselines=("sot-coin-count-scaled",),
           trials=2, min_seconds=0.02, peak_sizes=(128, 256), copy_mib=8, peak_repeats=2),
    # What the CPU targets compare: each game CNN unfolded and at f=4 on every CPU engine and
    # precision, so that each precision's best path is in the run whichever engine it is on
    # (in docs/benchmarks.md OpenVINO ran the originals' int8 and bf16 fastest),
    # with the scaled baselines as peers at the same batch sizes (each at its best, like the
    # originals). Tens of minutes on a small CPU.
    Preset("cpu-targets", "6 game CNNs and their scaled baselines, f=1 and f=4, batch 256/512/1024/4096, "
           "eager and compile fp32/bf16, ORT fp32/int8, OpenVINO fp32/bf16/int8, peaks", GAME_MODELS, (1, 4),
           (256, 512, 1024, 4096),
           (("eager", "fp32"), ("eager", "bf16"), ("compile", "fp32"), ("compile", "bf16"), ("ort", "fp32"),
            ("ort", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")),
           baselines=BASELINES, trials=5, min_seconds=0.4, copy_mib=256),
    # Peers side by side: the original on every CPU engine (torch.compile included: slow to
    # build: minutes on a small CPU) and the scaled baseline, against f=4 on the same engines.
    Preset("peers", "6 game CNNs, f=1 and f=4, batch 256/1024/4096, eager/compile/ORT/OpenVINO fp32, baselines "
           "at every batch", GAME_MODELS, (1, 4), (256, 1024, 4096),
           (("eager", "fp32"), ("compile", "fp32"), ("ort", "fp32"), ("openvino", "fp32")), baselines=BASELINES,
           trials=3, min_seconds=0.3, copy_mib=256),
    # The paper's setting: a GPU at large batch, fp16 on every GPU engine, folds 1-4.
    Preset("gpu", "game CNNs on CUDA, folds 1-4, batch 64-4096, eager fp32/fp16, cuda-graphs fp16, "
           "compile fp16, TensorRT fp16 (if installed), ORT fp32", GAME_MODELS, (1, 2, 3, 4),
           (64, 256, 1024, 4096),
           (("eager", "fp32"), ("eager", "fp16"), ("cuda-graphs", "fp16"), ("compile", "fp16"),
            ("tensorrt", "fp16"), ("ort", "fp32")),
           device="cuda", baselines=BASELINES, baseline_batch_sizes=(1024,), trials=5, min_seconds=0.3,
           peak_sizes=(4096, 8192, 16384), copy_mib=1024),
    # The paper's headline on one GPU in a few minutes (experiments/published/gpu_check.py runs it after
    # checking every CUDA backend against eager fp32): f=1 vs f=4 at batch 1,024, fp16 on every
    # CUDA engine (ONNX Runtime's CUDA provider runs fp32 only here).
    Preset("gpu-check", "6 game CNNs on CUDA, f=1 and f=4, batch 1024, fp16 on eager, CUDA graphs, compile and "
           "TensorRT (if installed), ORT CUDA fp32", GAME_MODELS, (1, 4), (1024,),
           (("eager", "fp16"), ("cuda-graphs", "fp16"), ("compile", "fp16"), ("tensorrt", "fp16"), ("ort", "fp32")),
           device="cuda", trials=3, min_seconds=0.2, peak_sizes=(4096, 8192), copy_mib=1024, peak_repeats=3),
]}


def preset_configs(preset: Preset | str, *, model_kwargs: dict | None = None,
                   width_mults: tuple[float, ...] | None = None, **overrides) -> tuple[Preset, list[BenchConfig]]:
    """The preset (with ``overrides`` of its fields applied, None values ignored) and its configs;
    ``model_kwargs`` go to the builder of the preset's models (not the baselines); ``width_mults``
    (None: sqrt(fold) for each fold) scale the hidden widths of the preset's models."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise UnknownNameError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[preset] if isinstance(preset, str) else preset
    p = replace(p, **{k: v for k, v in overrides.items() if v is not None})
    configs = make_configs(p.models, p.folds, p.batch_sizes, p.backends, device=p.device,
                           channel_multiples=p.channel_multiples, model_kwargs=model_kwargs,
                           width_mults=width_mults or (None,))
    if p.baselines:
        configs += make_configs(p.baselines, (1,), p.baseline_batch_sizes or p.batch_sizes, p.backends,
                                device=p.device)
    return p, configs


def preset_peaks(preset: Preset, configs: Iterable[BenchConfig], *, threads: int | None = None) -> PeakSet:
    """The matmul peak of every (runtime, device, precision) that ``configs`` run at, and each device's
    bandwidth, measured as ``preset`` says (its peak sizes, copy size and repeats)."""
    needed = sorted({(c.runtime, c.device, c.precision) for c in configs})
    return measure_peaks(needed, sizes=preset.peak_sizes, copy_mib=preset.copy_mib, repeats=preset.peak_repeats,
                         threads=threads)
