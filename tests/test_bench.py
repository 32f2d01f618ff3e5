"""Benchmark machinery (foldcnn.bench): configurations, interleaving, statistics on injected
timings, records, peaks, files, plots and the CLI. Correctness only; nothing here times anything
that matters."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from foldcnn.analysis import analyze
from foldcnn.bench import (
    PRESETS,
    RECORD_KEYS,
    Bandwidth,
    BenchConfig,
    Peak,
    PeakSet,
    TrialStats,
    WallTimer,
    build_records,
    estimate_seconds,
    interleaved_order,
    make_configs,
    measure_peaks,
    preset_configs,
    read_csv,
    read_json,
    run_sweep,
    skip_unavailable,
    time_block,
    write_csv,
    write_json,
)
from foldcnn.bench.tables import format_best, format_peers, format_records, peer_summary
from foldcnn.errors import UsageError
from foldcnn.models import create_model
from foldcnn.models.game import GAME_TASKS

MODEL = "apex-squad-count"  # the smallest game CNN (19 x 25 crops)


# ------------------------------------------------------------------------------ fakes
class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeBackend:
    """Advances a fake clock by ``cost(config, folded_batch, call_no)`` per run; logs every call."""

    def __init__(self, clock, config, num_classes, cost, log):
        self.clock, self.config, self.k, self.cost, self.log = clock, config, num_classes, cost, log
        self.calls = 0
        self.closed = False

    def run(self, x):
        n = x.shape[0]
        self.clock.t += self.cost(self.config, n, self.calls)
        self.calls += 1
        self.log.append((self.config.backend_key, n))
        return np.zeros((n, self.config.fold * self.k), np.float32)

    def close(self):
        self.closed = True


def fake_factory(clock, cost, log, built=None):
    def make(model, config, *, max_batch, calibration, threads):
        b = FakeBackend(clock, config, model.num_classes, cost, log)
        if built is not None:
            built.append((b, max_batch, calibration))
        return b

    return make


def fake_sweep(configs, cost, **kw):
    clock, log, built = FakeClock(), [], []
    out = run_sweep(configs, make_backend=fake_factory(clock, cost, log, built), timer=WallTimer(clock),
                    cuda=False, **kw)
    return out, log, built


# --------------------------------------------------------------------------- configs
def test_make_configs_rounds_up_to_multiples_of_fold_and_dedupes():
    cfgs = make_configs([MODEL], [1, 3, 4], [1, 4, 10], [("eager", "fp32")], channel_multiples=[8, 16])
    for c in cfgs:
        assert c.batch_size % c.fold == 0 and c.batch_size >= c.requested_batch_size
        assert c.folded_batch == c.batch_size // c.fold
    f4 = sorted((c.batch_size, c.requested_batch_size) for c in cfgs if c.fold == 4 and c.channel_multiple == 8)
    assert f4 == [(4, 4), (12, 10)]  # 1 and 4 both round to 4: timed once, under the exact size
    f3 = sorted(c.batch_size for c in cfgs if c.fold == 3 and c.channel_multiple == 8)
    assert f3 == [3, 6, 12]
    # fold 1 has no widened layers: one configuration per batch size whatever the multiples
    assert sorted(c.batch_size for c in cfgs if c.fold == 1) == [1, 4, 10]
    assert all(c.channel_multiple is None for c in cfgs if c.fold == 1)


def test_make_configs_rejects_bad_input():
    with pytest.raises(KeyError, match="unknown model"):
        make_configs(["no-such-model"])
    with pytest.raises(ValueError, match="batch sizes"):
        make_configs([MODEL], [1], [0])
    with pytest.raises(ValueError, match="multiple of fold"):
        BenchConfig(MODEL, fold=4, batch_size=6)
    with pytest.raises(ValueError, match="unknown backend"):
        BenchConfig(MODEL, backend="tpu")


def test_gpu_configs_skipped_without_cuda():
    cfgs = make_configs([MODEL], [1], [8], [("eager", "fp16"), ("cuda-graphs", "fp16")], device="cuda")
    cfgs += make_configs([MODEL], [1], [8], [("cuda-graphs", "fp16")], device="cpu")
    runnable, skipped = skip_unavailable(cfgs, {"cpu": None, "cuda": None}, cuda=False)
    assert runnable == []
    reasons = [why for _, why in skipped]
    assert reasons[:2] == ["skipped: no CUDA device"] * 2
    assert "CUDA only" in reasons[2]
    out, log, _ = fake_sweep(cfgs, lambda c, n, i: 1.0, trials=1, min_seconds=0.5)
    assert out.results == [] and log == [] and len(out.skipped) == 3


def test_unavailable_backend_pairs_are_skipped_with_reason():
    cfgs = make_configs([MODEL], [1], [8], [("eager", "fp32"), ("ort", "bf16")])
    runnable, skipped = skip_unavailable(cfgs, {"cpu": {("eager", "fp32")}}, cuda=False)
    assert [c.backend for c in runnable] == ["eager"]
    assert "ort/bf16 is not available" in skipped[0][1]


def test_presets_build_their_configs():
    p, cfgs = preset_configs("cpu-targets")
    assert {c.fold for c in cfgs} == {1, 4} and {c.requested_batch_size for c in cfgs} >= {256, 1024, 4096}
    # every precision's best CPU path is in the one run, whichever engine it is on
    assert {(c.backend, c.precision) for c in cfgs} == {(b, d) for b in ("eager", "compile") for d in ("fp32", "bf16")} | {
        ("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")}
    assert ("openvino", "fp32") in PRESETS["peers"].backends
    # the baselines are peers at their best batch too: every batch size the originals get, fold 1 only
    baselines = [c for c in cfgs if c.model.endswith("-scaled")]
    assert all(c.fold == 1 for c in baselines)
    assert {c.requested_batch_size for c in baselines} == {c.requested_batch_size for c in cfgs}
    assert len({c.model for c in cfgs}) == 12
    p, cfgs = preset_configs("gpu-check")
    assert p.device == "cuda" and {c.fold for c in cfgs} == {1, 4} and {c.batch_size for c in cfgs} == {1024}
    assert {c.model for c in cfgs} == set(GAME_TASKS) and ("tensorrt", "fp16") in p.backends
    p, cfgs = preset_configs("quick", trials=1, folds=(1,))
    assert p.trials == 1 and {c.fold for c in cfgs} == {1}
    with pytest.raises(KeyError, match="unknown preset"):
        preset_configs("nope")


# ---------------------------------------------------------------------------- timing
def test_interleaved_order_really_interleaves():
    order = interleaved_order(4, 3)
    assert len(order) == 12
    for t in range(3):
        block = order[4 * t: 4 * (t + 1)]
        assert all(trial == t for trial, _ in block)
        assert sorted(i for _, i in block) == [0, 1, 2, 3]  # every config once before any repeats
    firsts = [order[4 * t][1] for t in range(3)]
    assert firsts == [0, 1, 2]  # rotation: no config always runs first
    with pytest.raises(ValueError):
        interleaved_order(2, 0)


def test_trial_stats_median_quartiles_and_range():
    st = TrialStats.from_values([4.0, 1.0, 2.0, 8.0, 3.0])
    assert (st.median, st.min, st.max) == (3.0, 1.0, 8.0)
    assert (st.q1, st.q3) == (2.0, 4.0)
    one = TrialStats.from_values([5.0])
    assert one.median == one.q1 == one.q3 == one.min == one.max == 5.0
    with pytest.raises(ValueError):
        TrialStats.from_values([])


def test_time_block_runs_until_min_seconds():
    clock = FakeClock()

    def run():
        clock.t += 0.3

    calls, seconds = time_block(run, 1.0, WallTimer(clock))
    assert calls == 4 and seconds == pytest.approx(1.2)


def test_sweep_statistics_on_injected_timings():
    """One config, trials of 1 timed call costing 2, 4 and 1 s: images/s = B/2, B/4, B/1."""
    cfg = BenchConfig(MODEL, fold=2, batch_size=8, backend="eager")
    timed = iter([2.0, 4.0, 1.0])

    def cost(c, n, i):
        # calls: 2 warm-up, then per trial one untimed call and one timed call
        return next(timed) if i >= 2 and (i - 2) % 2 == 1 else 0.25  # binary fractions: exact sums

    out, _, _ = fake_sweep([cfg], cost, trials=3, min_seconds=0.5, warmup_calls=2)
    (res,) = out.results
    assert res.images_per_s.values == (4.0, 2.0, 8.0)
    assert (res.images_per_s.median, res.images_per_s.min, res.images_per_s.max) == (4.0, 2.0, 8.0)
    assert (res.images_per_s.q1, res.images_per_s.q3) == (3.0, 6.0)
    assert res.timed_calls == 3 and res.timed_seconds == pytest.approx(7.0)


def test_sweep_interleaves_configs_and_shares_backends():
    cfgs = make_configs([MODEL], [1, 2], [4, 8], [("eager", "fp32")])
    out, log, built = fake_sweep(cfgs, lambda c, n, i: 1.0, trials=2, min_seconds=0.5, warmup_calls=1)
    assert len(out.results) == 4 and not out.skipped
    # one backend per (model, fold, backend, precision), sized for its largest folded batch
    assert sorted(m for _, m, _ in built) == [4, 8]
    assert all(b.closed for b, _, _ in built)
    timed = log[4:]  # after 4 warm-ups; a call (1 s) longer than the block (0.5 s) gets no untimed call
    keys = [(k[1], n) for k, n in timed]
    assert len(keys) == 8
    assert len(set(keys[:4])) == 4 and len(set(keys[4:])) == 4  # each trial visits every config once
    assert keys[0] != keys[4]  # and the second trial starts elsewhere


def test_untimed_call_only_before_short_calls():
    short = BenchConfig(MODEL, batch_size=4)
    long = BenchConfig(MODEL, batch_size=8)
    out, log, _ = fake_sweep([short, long], lambda c, n, i: 0.25 if n == 4 else 2.0, trials=1, min_seconds=1.0,
                             warmup_calls=1)
    sizes = [n for _, n in log[2:]]
    assert sizes == [4] * 5 + [8]  # short: 1 untimed + 4 timed (1 s); long: 1 timed call of 2 s
    assert [r.images_per_s.median for r in out.results] == [16.0, 4.0]


def test_sweep_skips_failing_engines_and_calibrates_int8():
    cfgs = make_configs([MODEL], [1, 4], [8], [("ort", "int8"), ("compile", "fp32")])

    def make(model, config, *, max_batch, calibration, threads):
        if config.backend == "compile":
            raise RuntimeError("no C++ compiler\nlong trace")
        assert calibration.dtype == torch.uint8 and tuple(calibration.shape[1:]) == model.input_shape
        assert calibration.shape[0] % 12 == 0  # foldable by 1, 2, 3 and 4
        return FakeBackend(clock, config, model.num_classes, lambda c, n, i: 1.0, [])

    clock = FakeClock()
    out = run_sweep(cfgs, make_backend=make, timer=WallTimer(clock), trials=1, min_seconds=0.5, cuda=False)
    assert {r.config.backend for r in out.results} == {"ort"}
    assert [why for _, why in out.skipped] == ["skipped: building compile/fp32 failed: RuntimeError: no C++ compiler"] * 2


def test_sweep_skips_backend_with_wrong_output_shape():
    class Bad(FakeBackend):
        def run(self, x):
            return np.zeros((x.shape[0], 1), np.float32)

    clock = FakeClock()
    cfg = BenchConfig(MODEL, batch_size=4)
    out = run_sweep([cfg], make_backend=lambda m, c, **kw: Bad(clock, c, m.num_classes, None, []),
                    timer=WallTimer(clock), trials=1, min_seconds=0.1, cuda=False)
    assert out.results == [] and "returned logits of shape" in out.skipped[0][1]


def test_estimate_grows_with_trials():
    cfgs = make_configs([MODEL], [1, 4], [8], [("eager", "fp32"), ("ort", "int8")])
    assert 0 < estimate_seconds(cfgs, 1, 0.1) < estimate_seconds(cfgs, 3, 0.1)


def test_estimate_counts_a_compile_per_batch_size():
    one = make_configs([MODEL], [1], [8], [("compile", "fp32")])
    three = make_configs([MODEL], [1], [8, 16, 32], [("compile", "fp32")])
    eager = make_configs([MODEL], [1], [8, 16, 32], [("eager", "fp32")])
    # each new shape compiles again (seconds on 2 cores); eager pays no such cost
    assert estimate_seconds(three, 1, 0.01) - estimate_seconds(one, 1, 0.01) > 5.0
    assert estimate_seconds(eager, 1, 0.01) < estimate_seconds(three, 1, 0.01) - 5.0


# --------------------------------------------------------------------------- records
def _records(speed=None):
    """Fake sweep: images/s = speed(config) exactly (one timed call of B / speed seconds)."""
    speed = speed or (lambda c: 1000.0 * c.fold + c.batch_size + (500 if c.backend == "ort" else 0))
    cfgs = make_configs([MODEL], [1, 2, 4], [4, 16], [("eager", "fp32"), ("ort", "fp32")])
    cfgs += make_configs([f"{MODEL}-scaled"], [1], [16], [("ort", "fp32")])

    def cost(c, n, i):
        return n * c.fold / speed_for[(c.backend_key, n)]

    speed_for = {(c.backend_key, c.folded_batch): speed(c) for c in cfgs}
    out, _, _ = fake_sweep(cfgs, cost, trials=1, min_seconds=1e-9, warmup_calls=1)
    peaks = PeakSet([Peak("torch", "cpu", "fp32", 1e11, "fake"), Peak("ort", "cpu", "fp32", 2e11, "fake")])
    return build_records(out.results, peaks)


def test_record_keys_types_and_flops():
    records = _records()
    assert len(records) == 3 * 2 * 2 + 1
    flops = {f: analyze(create_model(MODEL, fold=f), bytes_per_element=4).flops_per_image for f in (1, 2, 4)}
    for r in records:
        assert tuple(r) == RECORD_KEYS
        assert isinstance(r["model"], str) and isinstance(r["fold"], int) and isinstance(r["batch_size"], int)
        assert isinstance(r["images_per_s"], float) and isinstance(r["best_batch"], bool)
        assert r["flops_per_s"] == pytest.approx(r["images_per_s"] * r["flops_per_image"])
        # the roof of fp32 is the higher matmul peak (ORT's here), whichever engine ran the model
        assert r["fraction_of_peak"] == pytest.approx(r["flops_per_s"] / 2e11) and r["roof"] == "ort matmul"
        assert r["arithmetic_intensity"] == pytest.approx(r["flops_per_image"] * 1 / r["bytes_per_image"])
        if r["family"] == "game":
            assert r["flops_per_image"] == pytest.approx(flops[r["fold"]])
        if r["fold"] > 1:
            assert r["channel_multiple"] == 8  # the default rounding, resolved


def test_ratio_against_the_matching_fold1_row():
    records = _records()
    by = {(r["model"], r["fold"], r["requested_batch_size"], r["backend"]): r for r in records}
    for r in records:
        base = by[(r["model"], 1, r["requested_batch_size"], r["backend"])]
        assert r["ratio_vs_original"] == pytest.approx(r["images_per_s"] / base["images_per_s"])
    r = by[(MODEL, 4, 16, "ort")]
    assert r["ratio_vs_original"] == pytest.approx((4000 + 16 + 500) / (1000 + 16 + 500))


def test_best_batch_and_peers():
    records = _records()
    best = [r for r in records if r["best_batch"]]
    assert len(best) == 7 and all(r["batch_size"] == 16 for r in best)
    (g,) = peer_summary(records)
    assert g["task"] == MODEL and set(g["original"]) == {"eager", "ort"}
    assert g["folded"]["fold"] == 4 and g["folded"]["backend"] == "ort"
    peer = max(g["original"]["ort"]["images_per_s"], g["baseline"]["images_per_s"])
    assert g["gain"] == pytest.approx(g["folded"]["images_per_s"] / peer)
    for text in (format_records(records), format_best(records), format_peers(records)):
        assert MODEL in text


def _rec(model, fold, backend, precision, images_per_s, flops_per_image=1e7, family="game"):
    return {"model": model, "family": family, "fold": fold, "backend": backend, "precision": precision, "device": "cpu",
            "batch_size": 1024, "images_per_s": images_per_s, "flops_per_s": images_per_s * flops_per_image,
            "best_batch": True}


def test_roof_is_the_highest_peak_of_the_precision_and_never_below_a_model():
    from foldcnn.bench.report import add_roofs

    peaks = PeakSet([Peak("torch", "cpu", "fp32", 1e11, "mm"), Peak("ort", "cpu", "fp32", 2e11, "MatMul"),
                     Peak("openvino", "cpu", "int8", 3e11, "QDQ MatMul"), Peak("ort", "cpu", "int8", 1e11, "MMI")])
    assert peaks.roof("cpu", "fp32").runtime == "ort" and peaks.roof("cpu", "bf16") is None
    records = [_rec("a", 1, "eager", "fp32", 5_000), _rec("a", 4, "compile", "fp32", 25_000),  # 2.5e11 > 2e11
               _rec("a", 1, "ort", "int8", 10_000), _rec("a", 4, "openvino", "int8", 20_000),
               _rec("a", 4, "openvino", "bf16", 20_000)]
    add_roofs(records, peaks)
    fp32, _, ort8, ov8, bf16 = records
    assert fp32["peak_flops_per_s"] == pytest.approx(2.5e11) and "model: a f=4 compile" in fp32["roof"]
    assert records[1]["fraction_of_peak"] == pytest.approx(1.0)  # the fastest model is its own roof
    assert ort8["roof"] == "openvino matmul" and ort8["fraction_of_peak"] == pytest.approx(1e11 / 3e11)
    assert ov8["fraction_of_peak"] == pytest.approx(2e11 / 3e11)
    assert bf16["fraction_of_peak"] is None and bf16["roof"] is None  # no bf16 matmul measured: no claim
    assert all(r["fraction_of_peak"] is None or r["fraction_of_peak"] <= 1.0 for r in records)


def test_verdicts_compare_best_engine_with_best_engine_and_headline_any_precision():
    from foldcnn.bench.tables import format_headline, headline

    records = [_rec("t", 1, "ort", "int8", 16_000), _rec("t", 1, "openvino", "int8", 29_000),
               _rec("t", 4, "ort", "int8", 30_000), _rec("t", 4, "openvino", "int8", 38_000),
               _rec("t", 1, "ort", "fp32", 11_000), _rec("t", 4, "ort", "fp32", 11_500),
               _rec("t-scaled", 1, "ort", "fp32", 12_000, family="baseline"),
               _rec("t", 1, "openvino", "bf16", 18_000), _rec("t", 4, "openvino", "bf16", 40_000)]
    by_precision = {g["precision"]: g for g in peer_summary(records)}
    # int8: the folded best (OpenVINO) over the original's best on any engine (OpenVINO), not ORT over ORT
    assert by_precision["int8"]["gain_vs_original"] == pytest.approx(38_000 / 29_000)
    assert by_precision["fp32"]["gain_vs_original"] == pytest.approx(11_500 / 11_000)
    assert by_precision["fp32"]["gain"] == pytest.approx(11_500 / 12_000)  # the baseline is a peer, not the original
    (g,) = headline(records)
    assert (g["original"]["precision"], g["folded"]["precision"]) == ("int8", "bf16")
    assert g["gain"] == pytest.approx(40_000 / 29_000)
    (g,) = headline(records, {"t": {"fp32", "int8"}})  # bf16 disagreed with fp32 too often: left out
    assert g["gain"] == pytest.approx(38_000 / 29_000)
    assert "f=4 openvino/int8 B=1024" in format_headline(records, {"t": {"fp32", "int8"}})
    assert headline(records, {}) == []


def test_json_and_csv_round_trip(tmp_path):
    records = _records()
    peaks = PeakSet([Peak("torch", "cpu", "fp32", 1e11, "fake mm")])
    write_json(tmp_path / "b.json", records, peaks=peaks, machine={"cpu_model": "x"}, settings={"trials": 1},
               skipped=[{"config": "c", "reason": "skipped: no CUDA device"}])
    doc = read_json(tmp_path / "b.json")
    assert doc["records"] == records and doc["machine"] == {"cpu_model": "x"}
    assert doc["peaks"].flops_per_s("torch", "cpu", "fp32") == 1e11
    assert doc["skipped"][0]["reason"] == "skipped: no CUDA device"
    assert len(doc["best"]) == 7
    raw = json.loads((tmp_path / "b.json").read_text())
    assert {"model", "fold", "batch_size", "backend", "precision", "images_per_s", "flops_per_s",
            "arithmetic_intensity", "fraction_of_peak"} <= set(raw["records"][0])
    write_csv(tmp_path / "b.csv", records)
    assert read_csv(tmp_path / "b.csv") == records


def _keyed_dtype(rows: list[dict]) -> list[dict]:
    return [{("dtype" if k == "precision" else k): v for k, v in r.items()} for r in rows]


def test_bench_files_written_before_precision_was_the_key_still_read(tmp_path):
    """format_version 1 (foldcnn 0.1) keyed a record's, a best row's and a peak's precision "dtype":
    read_json and read_csv give them keyed as this version writes them."""
    records = _records()
    peaks = PeakSet([Peak("torch", "cpu", "fp32", 1e11, "fake mm")])
    write_json(tmp_path / "new.json", records, peaks=peaks)
    doc = json.loads((tmp_path / "new.json").read_text())
    assert doc["format_version"] == 2 and "dtype" not in doc["records"][0]
    old = {**doc, "format_version": 1, "records": _keyed_dtype(doc["records"]), "best": _keyed_dtype(doc["best"]),
           "peaks": {**doc["peaks"], "peaks": _keyed_dtype(doc["peaks"]["peaks"])}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    got, want = read_json(tmp_path / "old.json"), read_json(tmp_path / "new.json")
    assert got["records"] == want["records"] == records and got["best"] == want["best"]
    assert got["peaks"].flops_per_s("torch", "cpu", "fp32") == 1e11
    write_csv(tmp_path / "b.csv", records)
    text = (tmp_path / "b.csv").read_text()
    (tmp_path / "old.csv").write_text(text.replace(",precision,", ",dtype,", 1))
    assert read_csv(tmp_path / "old.csv") == records
    (tmp_path / "future.json").write_text(json.dumps({**doc, "format_version": 3}))
    with pytest.raises(UsageError, match="newer than this foldcnn reads"):
        read_json(tmp_path / "future.json")


def test_the_published_bench_file_of_format_version_1_reads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "results/search/apex-squad-count-2000-bench.json"
    assert json.loads(path.read_text())["format_version"] == 1
    doc = read_json(path)
    assert doc["records"] and all(r["precision"] in ("int8", "bf16") for r in doc["records"])
    assert all("dtype" not in r for r in doc["records"] + doc["best"])


def test_plots_write_png_files(tmp_path):
    pytest.importorskip("matplotlib")
    from foldcnn.bench.plots import write_plots

    records = _records()
    peaks = PeakSet([Peak("torch", "cpu", "fp32", 1e11, "f"), Peak("ort", "cpu", "fp32", 2e11, "f")])
    peaks.bandwidths.append(Bandwidth("cpu", 1e10, "f"))
    paths = write_plots(records, peaks, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["roofline_eager_fp32_cpu.png", "roofline_ort_fp32_cpu.png",
                     "throughput_eager_fp32_cpu.png", "throughput_ort_fp32_cpu.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def test_plots_draw_the_baseline_in_its_tasks_panel():
    from foldcnn.bench.plots import _fold_label, _panel

    names = {"sot-timer", "sot-timer-scaled", "lone-scaled"}
    base = {"model": "sot-timer-scaled", "family": "baseline", "fold": 1, "channel_multiple": None}
    assert _panel(base, names) == "sot-timer" and _fold_label(base) == "scaled baseline"
    orig = {"model": "sot-timer", "family": "game", "fold": 1, "channel_multiple": None}
    folded = {**orig, "fold": 4, "channel_multiple": 8}
    assert _panel(orig, names) == _panel(folded, names) == "sot-timer"
    assert [_fold_label(r) for r in (orig, folded)] == ["f=1 (original)", "f=4 (width x8)"]
    # a baseline whose task is not in the run keeps a panel of its own
    assert _panel({**base, "model": "lone-scaled"}, names) == "lone-scaled"


def test_peakset_highest_keeps_the_higher_measurement_per_roof():
    before = PeakSet([Peak("torch", "cpu", "fp32", 3e11, "mm a"), Peak("torch", "cpu", "bf16", 2e12, "mm b")],
                     [Bandwidth("cpu", 4e10, "copy a")], ["ort/cpu/int8: no kernel"])
    after = PeakSet([Peak("torch", "cpu", "fp32", 4e11, "mm c"), Peak("torch", "cpu", "bf16", 1e12, "mm d"),
                     Peak("ort", "cpu", "int8", 5e12, "mmi")], [Bandwidth("cpu", 3e10, "copy b")], [])
    both = before.highest(after)
    assert both.flops_per_s("torch", "cpu", "fp32") == 4e11 and both.flops_per_s("torch", "cpu", "bf16") == 2e12
    assert both.bytes_per_s("cpu") == 4e10 and len(both.bandwidths) == 1
    whats = {(p.precision, p.what) for p in both.peaks}
    assert ("fp32", "mm c; the higher of 2 measurements") in whats
    assert ("bf16", "mm b; the higher of 2 measurements") in whats
    assert ("int8", "mmi") in whats  # measured once: said as it is
    assert both.skipped == []  # measured after all
    assert before.highest(PeakSet()).skipped == ["ort/cpu/int8: no kernel"]
    # neither input is changed
    assert before.flops_per_s("torch", "cpu", "fp32") == 3e11 and before.peaks[0].what == "mm a"


# ---------------------------------------------------------------------- real engines
def test_peaks_are_positive():
    needed = [("torch", "cpu", "fp32"), ("torch", "cuda", "fp16")]
    try:
        import onnxruntime  # noqa: F401

        needed += [("ort", "cpu", "fp32"), ("ort", "cpu", "int8")]
    except ImportError:
        pass
    peaks = measure_peaks(needed, sizes=128, copy_mib=4, repeats=2, threads=1)
    assert len(peaks.peaks) == len(needed) - (0 if torch.cuda.is_available() else 1)
    for p in peaks.peaks:
        assert p.flops_per_s > 0 and p.what
    assert peaks.bytes_per_s("cpu") > 0
    if not torch.cuda.is_available():
        assert any("no CUDA device" in s for s in peaks.skipped)


def test_real_eager_sweep_end_to_end():
    cfgs = make_configs([MODEL], [1, 2], [4], [("eager", "fp32")])
    out = run_sweep(cfgs, trials=2, min_seconds=0.005, threads=1)
    assert not out.skipped and len(out.results) == 2
    for r in out.results:
        assert r.images_per_s.median > 0 and len(r.images_per_s.values) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_sweep():
    cfgs = make_configs([MODEL], [1, 4], [64], [("eager", "fp16"), ("cuda-graphs", "fp16")], device="cuda")
    out = run_sweep(cfgs, trials=2, min_seconds=0.01)
    assert len(out.results) == 4, out.skipped
    peaks = measure_peaks([("torch", "cuda", "fp16")], sizes=1024, copy_mib=64, repeats=2)
    assert peaks.flops_per_s("torch", "cuda", "fp16") > 0 and peaks.bytes_per_s("cuda") > 0


# ---------------------------------------------------------------------------------- CLI
def test_cli_bench_quick_end_to_end(tmp_path, capsys):
    from foldcnn.cli import main

    rc = main(["bench", "--quick", "--threads", "1", "--quiet", "--json", str(tmp_path / "q.json"),
               "--csv", str(tmp_path / "q.csv")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "6 configurations" in out and "estimated" in out
    assert "best batch size" in out and "peers" in out and "peak torch/cpu/fp32" in out
    assert "the fastest of 128/256" in out and "the higher of 2 measurements" in out  # before + after
    doc = read_json(tmp_path / "q.json")
    assert len(doc["records"]) == 6 and doc["machine"]["cpu_model"] and doc["machine"]["torch"]
    assert read_csv(tmp_path / "q.csv") == doc["records"]


def test_cli_gpu_preset_without_cuda_says_skipped(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from foldcnn.cli import main

    rc = main(["bench", "--preset", "gpu", "--models", MODEL, "--folds", "1", "--batch-sizes", "64",
               "--no-baselines", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "0 configurations" in out and "skipped: no CUDA device" in out


def test_bench_flags_are_the_preset_fields():
    """Each Preset field the command line takes is one `foldcnn bench` flag, made from the field; a
    given flag replaces the preset's value, an absent one keeps it."""
    from dataclasses import fields

    from foldcnn.bench.presets import PRESETS, Preset
    from foldcnn.cli import build_parser
    from foldcnn.cli.bench import _plan
    from foldcnn.options import flag_of, is_cli_option

    parser = build_parser()
    flags = {f.name: flag_of(f) for f in fields(Preset) if is_cli_option(f)}
    assert set(flags) == {"models", "folds", "batch_sizes", "backends", "device", "channel_multiples", "trials",
                          "min_seconds", "peak_sizes"}
    args = parser.parse_args(["bench", "--quick", "--folds", "1,4", "--batch-sizes", "16", "--backends", "eager,ort",
                              "--precision", "fp32,int8", "--channel-multiples", "1,default", "--trials", "4",
                              "--min-seconds", "0.5", "--peak-sizes", "64", "--no-baselines"])
    preset, configs = _plan(args)
    assert preset == replace(PRESETS["quick"], folds=(1, 4), batch_sizes=(16,), trials=4, min_seconds=0.5,
                             backends=(("eager", "fp32"), ("eager", "int8"), ("ort", "fp32"), ("ort", "int8")),
                             channel_multiples=(1, None), peak_sizes=(64,), baselines=())
    assert {c.fold for c in configs} == {1, 4} and {c.batch_size for c in configs} == {16}
    assert _plan(parser.parse_args(["bench", "--quick"]))[0] == PRESETS["quick"]
    assert _plan(parser.parse_args(["bench", "--quick", "--peak-size", "32"]))[0].peak_sizes == (32,)


def test_cli_bad_flags_give_one_line_errors(capsys):
    from foldcnn.cli import main

    assert main(["bench", "--quick", "--folds", "1,x"]) == 2
    assert "--folds takes comma-separated integers" in capsys.readouterr().err
    assert main(["bench", "--quick", "--peak-sizes", "256,big"]) == 2
    assert "--peak-sizes takes comma-separated integers" in capsys.readouterr().err
    assert main(["bench", "--quick", "--max-minutes", "0.0001"]) == 2
    assert "exceeds --max-minutes" in capsys.readouterr().err


def test_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, foldcnn.bench, foldcnn.bench.tables, foldcnn.bench.plots, foldcnn.cli.bench, torch; "
            "bad = [m for m in ('onnxruntime', 'matplotlib', 'onnx') if m in sys.modules]; "
            "assert not bad, bad; assert not torch.cuda.is_initialized()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_width_mults_time_narrower_and_wider_builds_and_only_the_original_is_the_ratio_base():
    from foldcnn.bench.report import add_ratios, is_original

    cfgs = make_configs([MODEL], [1, 4], [8], [("eager", "fp32")], width_mults=[None, 0.5, 1.0])
    keys = sorted((c.fold, c.resolved_width_mult, c.channel_multiple) for c in cfgs)
    # f=1 at None and 1.0 is one build (the original); f=4 at 1.0 keeps the original's widths per slot
    assert keys == [(1, 0.5, None), (1, 1.0, None), (4, 0.5, None), (4, 1.0, None), (4, 2.0, None)]
    narrow = next(c for c in cfgs if c.fold == 1 and c.resolved_width_mult == 0.5)
    assert narrow.widened and narrow.build_kwargs()["width_mult"] == 0.5 and "w=0.5" in narrow.label()
    assert not next(c for c in cfgs if c.fold == 4 and c.resolved_width_mult == 1.0).widened
    records = [{"model": MODEL, "fold": 1, "width_mult": w, "requested_batch_size": 8, "backend": "eager",
                "precision": "fp32", "device": "cpu", "images_per_s": v} for w, v in ((1.0, 100.0), (0.5, 300.0))]
    add_ratios(records)
    assert [r["ratio_vs_original"] for r in records] == [1.0, 3.0] and [is_original(r) for r in records] == [True, False]
    with pytest.raises(ValueError, match="positive"):
        make_configs([MODEL], [1], [8], width_mults=[-1.0])


def test_cli_bench_width_mults(tmp_path, capsys):
    from foldcnn.cli import main

    rc = main(["bench", "--models", MODEL, "--folds", "1", "--width-mults", "0.5,1", "--batch-sizes", "8",
               "--backends", "eager/fp32", "--no-baselines", "--no-peak", "--trials", "1", "--min-seconds", "0.01",
               "--threads", "1", "--quiet", "--json", str(tmp_path / "w.json")])
    assert rc == 0
    recs = read_json(tmp_path / "w.json")["records"]
    assert sorted(r["width_mult"] for r in recs) == [0.5, 1.0]
    narrow = next(r for r in recs if r["width_mult"] == 0.5)
    assert narrow["ratio_vs_original"] > 0 and narrow["flops_per_image"] < next(
        r for r in recs if r["width_mult"] == 1.0)["flops_per_image"]
    capsys.readouterr()
    assert main(["bench", "--quick", "--width-mults", "0.5,-2"]) == 2
    assert "--width-mults takes positive numbers" in capsys.readouterr().err
