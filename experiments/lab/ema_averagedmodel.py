"""Our WeightAverage against torch.optim.swa_utils.AveragedModel: same weights? same speed?

    python experiments/lab/ema_averagedmodel.py --steps 50 --decay 0.9 --trials 5

Trains a tiny folded model (train-time BatchNorm, fold slots tied, as ``foldcnn train`` does by
default) with Adam for ``--steps`` steps and keeps three averages side by side:

* ``ours``: foldcnn.train.ema.WeightAverage (warm-up decay ``min(d, (1+t)/(10+t))``);
* ``torch-ema``: ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True)``;
* ``torch-warmup``: AveragedModel with our warm-up written as a ``multi_avg_fn``, primed with one
  ``update_parameters`` at the start (its first call copies instead of averaging).

Prints, per average, the largest difference from ``ours`` over the floating-point state, whether
it is bit-identical, and the BatchNorm batch counters (integer buffers) against the model's.
Then the median time of one update (``--trials`` interleaved trials of ``--seconds`` each) on a
few zoo models, for ``ours`` and ``torch-warmup``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from foldcnn.bench.timing import WallTimer, interleaved_order, time_block
from foldcnn.models import create_model
from foldcnn.train.batchnorm import add_train_batchnorm_
from foldcnn.train.ema import WeightAverage
from foldcnn.train.symmetry import tie_fold_slots_


def tiny_model(name: str = "lol-gold-fraction", fold: int = 2, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = add_train_batchnorm_(create_model(name, fold=fold, **kw))
    return tie_fold_slots_(model, fold)


def warmup_multi_avg_fn(decay: float):
    """Our warm-up schedule in AveragedModel's interface (n_averaged counts the priming copy)."""

    @torch.no_grad()
    def fn(averaged, current, n_averaged):
        if not averaged[0].is_floating_point():
            return  # leave integer buffers as they are, as WeightAverage does
        t = int(n_averaged) - 1
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1 + t) / (10 + t)))

    return fn


def averaged_state(avg) -> dict:
    if isinstance(avg, WeightAverage):
        return avg.shadow
    return {k: v for k, v in avg.module.state_dict().items()}


def compare(steps: int, decay: float) -> None:
    model = tiny_model(num_classes=4, input_size=(12, 12))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ours = WeightAverage(model, decay)
    plain = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    warm = AveragedModel(model, multi_avg_fn=warmup_multi_avg_fn(decay), use_buffers=True)
    warm.update_parameters(model)  # n_averaged 0 -> 1: a copy of the start, like WeightAverage's shadow
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        x = torch.rand(8, *model.folded_input_shape, generator=g)
        y = torch.randint(0, 4, (8 * model.fold,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 4), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours.update(model)
        plain.update_parameters(model)
        warm.update_parameters(model)
    ref = averaged_state(ours)
    counters = {k: int(v) for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    print(f"{steps} Adam steps, decay {decay}; against ours over {len(ref)} float tensors "
          "(relative: max |difference| / max |ours| per tensor):")
    for name, avg in (("torch-ema", plain), ("torch-warmup", warm)):
        state = averaged_state(avg)
        diffs = {k: ((state[k] - v).abs().max() / v.abs().max().clamp_min(1e-12)).item()
                 for k, v in ref.items() if v.numel()}
        worst = max(diffs, key=diffs.get)
        same = all(torch.equal(state[k], v) for k, v in ref.items())
        ints = sorted({int(state[k]) for k in counters})
        print(f"  {name:13s} largest relative difference {diffs[worst]:.2e} ({worst})  bit-identical {same}  "
              f"BatchNorm batch counters {ints} (model's: {sorted(set(counters.values()))})")
        print(f"  {'':13s} saved keys: {len(avg.state_dict())}, e.g. {sorted(avg.state_dict())[-2:]}")
    print(f"  ours          saved keys {sorted(ours.state_dict())}")


def update_seconds(models: list[tuple[str, int]], decay: float, trials: int, seconds: float) -> None:
    print(f"\nmedian time of one update, {trials} interleaved trials of {seconds} s:")
    cases = []
    for name, fold in models:
        model = tiny_model(name, fold)
        ours = WeightAverage(model, decay)
        warm = AveragedModel(model, multi_avg_fn=warmup_multi_avg_fn(decay), use_buffers=True)
        warm.update_parameters(model)
        cases += [(name, fold, "ours", lambda o=ours, m=model: o.update(m)),
                  (name, fold, "torch-warmup", lambda w=warm, m=model: w.update_parameters(m))]
    per = {i: [] for i in range(len(cases))}
    for *_, fn in cases:  # warm-up
        fn()
    for _, i in interleaved_order(len(cases), trials):
        calls, elapsed = time_block(cases[i][3], seconds, WallTimer())
        per[i].append(elapsed / calls)
    for i, (name, fold, which, _) in enumerate(cases):
        print(f"  {name:18s} f={fold}  {which:13s} {statistics.median(per[i]) * 1e6:9.1f} us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--decay", type=float, default=0.9)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    compare(args.steps, args.decay)
    update_seconds([("lol-gold-fraction", 4), ("noscope-coral", 2), ("cifar-resnet18", 1)], args.decay,
                   args.trials, args.seconds)


if __name__ == "__main__":
    main()
