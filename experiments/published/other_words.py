"""How often region models read the ``other`` class's crops as ``other``, kind by kind and word by
word: docs/scrape.md, "The other class".

    python experiments/published/other_words.py --task lol-gold-int \\
        --checkpoints balanced-f1=runs/lol-gold-int-cm32/original/checkpoint,balanced-f4=runs/lol-gold-int-cm32/fold4/checkpoint \\
        --tag other-share

The crops are the training renderer's own ``other`` crops (foldcnn.data.game_text): ``--per-kind``
of each kind (empty panel, placeholder, word, garbled text, a readout cut by the crop edge, a value
outside the class list), drawn with seeds no training split uses, and ``--per-word`` of each of
the renderer's words. Each probe crop is folded with three of the task's ordinary crops (also
fresh), so a folded model sees fold-mates as it does in use. One row per (model, kind) and one per
(model, word) of the words it reads worst.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from foldcnn.data.game_text import (
    OTHER,
    OTHER_KINDS,
    TRACKING,
    WORDS,
    _other_readout,
    font_faces,
    game_task,
    game_text_arrays,
    render_readouts,
)
from foldcnn.infer.predictor import Predictor
from foldcnn.results import write_result

SEED = 4242  # no split of `foldcnn data game` uses it (split seeds are derived from --data-seed)


def probe_crops(task: str, kinds: list[tuple[str, int | None]], n: int, seed: int) -> np.ndarray:
    """``n`` 'other' crops per (kind, word index or None), rendered as training renders them."""
    spec = game_task(task)
    rng = np.random.default_rng(seed)
    texts, face_i, r, track = [], [], [], []
    for kind, word in kinds:
        for _ in range(n):
            rr = [int(v) for v in rng.integers(0, 1 << 30, 4)]
            if word is not None:
                rr[3] = word + len(WORDS) * int(rng.integers(0, 1 << 20))
            texts.append(_other_readout(spec, kind, rr))
            r.append(rr)
            face_i.append(int(rng.integers(len(font_faces()))))
            track.append(int(rng.choice(TRACKING)))
    return render_readouts(spec, texts, face_i, rng.random((len(texts), 5)), r, track, rng)


def read_as_other(predictor: Predictor, task: str, probes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Whether each probe crop is read as 'other', and what it is read as; each probe folded with
    three fresh ordinary crops of the task."""
    mates, _ = game_text_arrays(task, 3 * len(probes), SEED + 1)
    mix = np.empty((4 * len(probes), *probes.shape[1:]), np.uint8)
    mix[0::4] = probes
    for j in range(3):
        mix[j + 1::4] = mates[j::3]
    got = [p.class_name for p in predictor.predict(list(mix))[0::4]]
    return np.array([g == OTHER for g in got]), got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--checkpoints", required=True, metavar="NAME=PATH,...")
    ap.add_argument("--per-kind", type=int, default=400)
    ap.add_argument("--per-word", type=int, default=64)
    ap.add_argument("--worst", type=int, default=5, help="word rows per model: the words read worst")
    ap.add_argument("--words", default="GOLD", help="words always given a row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="")
    ap.add_argument("--results", default="results")
    args = ap.parse_args(argv)
    models = dict(kv.split("=", 1) for kv in args.checkpoints.split(","))
    kinds = [(k, None) for k in OTHER_KINDS]
    words = [("words", i) for i in range(len(WORDS))]
    kind_crops = probe_crops(args.task, kinds, args.per_kind, SEED)
    word_crops = probe_crops(args.task, words, args.per_word, SEED + 2)
    rows = []
    for name, path in models.items():
        predictor = Predictor.from_checkpoint(path, threads=args.threads)
        ok, _ = read_as_other(predictor, args.task, kind_crops)
        for i, (kind, _) in enumerate(kinds):
            rows.append({"model": name, "what": f"kind: {kind}", "crops": args.per_kind,
                         "other": float(ok[i * args.per_kind:(i + 1) * args.per_kind].mean()) * 100})
        ok, got = read_as_other(predictor, args.task, word_crops)
        per_word = ok.reshape(len(WORDS), args.per_word).mean(1) * 100
        keep = set(np.argsort(per_word, kind="stable")[:args.worst].tolist())
        keep |= {WORDS.index(w) for w in args.words.split(",") if w in WORDS}
        for i in sorted(keep, key=lambda i: per_word[i]):
            wrong = [g for g in got[i * args.per_word:(i + 1) * args.per_word] if g != OTHER]
            common = max(set(wrong), key=wrong.count) if wrong else ""
            rows.append({"model": name, "what": f"word: {WORDS[i]}", "crops": args.per_word,
                         "other": float(per_word[i]), "misread_as": common})
        print(f"{name}: " + ", ".join(f"{r['what']} {r['other']:.1f}%" for r in rows if r["model"] == name),
              flush=True)
    what = f"other-class-{args.task}" + (f"-{args.tag}" if args.tag else "")
    path = write_result(
        Path(args.results), what,
        description=f"{args.task}: the share of the training renderer's 'other' crops read as 'other', by kind "
                    "and by word (the words read worst, and those named), each folded with three ordinary crops",
        columns=[{"title": "model", "cell": "{model}"}, {"title": "crops", "cell": "{what}"},
                 {"title": "n", "cell": "{crops}"}, {"title": "read as other", "cell": "{other:.1f}%"},
                 {"title": "most common misreading", "cell": "{misread_as}"}],
        rows=rows, setup={"task": args.task, "checkpoints": models, "seed": SEED})
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
