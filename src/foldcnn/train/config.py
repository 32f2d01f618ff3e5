"""Training configuration: a frozen, validated dataclass saved with every run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from foldcnn.errors import UsageError
from foldcnn.fold import round_batch
from foldcnn.options import option
from foldcnn.train.consistency import CONSISTENCY_KINDS

OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("onecycle", "cosine", "constant")
DISTILL_KINDS = ("none", "mse", "kl")
DEVICES = ("cpu", "cuda", "auto")
# train_state.pt is written after every epoch and every this many steps within one (resume).
DEFAULT_STATE_EVERY_STEPS = 500


def recommended_budget(fold: int) -> dict:
    """Epochs and weight decay that matched the original's test top-1 in docs/accuracy.md.

    Measured on the six generated game tasks (AdamW 3e-3 one-cycle, batch 64 images): the original
    took 60 epochs, f=2 and f=3 100, f=4 200. Weight decay 0.05 (instead of the paper's 1e-5)
    gained f=4 0.3-0.9 points of test top-1 on five of six tasks and f=3 up to 0.9; f=2 met the bar
    without it. Folds above 4 were not measured and get the f=4 budget. `foldcnn train` uses these
    when --epochs / --weight-decay are not given.
    """
    epochs = 60 if fold <= 1 else 100 if fold <= 3 else 200
    return {"epochs": epochs, "weight_decay": 1e-5 if fold <= 2 else 0.05}


# Small training sets get at least the optimizer steps these epochs give on this many images (at the
# default batch): the budgets above were tuned on 8,000-40,000 images, where they give 7,500-37,500
# steps; on 1,000 images the same epochs stop after a tenth of that, still learning.
FLOOR_IMAGES = 4000
# Extended budgets (epochs raised to the floor) stop on a validation plateau: the mean val top-1 of
# the last PLATEAU_WINDOW epochs has not improved for this fraction of the epochs (at least
# PLATEAU_MIN_PATIENCE), judged from PLATEAU_AFTER of the epochs on. The one-cycle schedule peaks at
# 25% and anneals to the end; at 75% its learning rate is down to a quarter of the peak. Judged from
# 50% on, a plateau in the high-rate middle stopped runs before the annealing that brings their
# largest gains (docs/accuracy.md, "Plateau stopping waits for the annealing").
PLATEAU_WINDOW, PLATEAU_FRACTION, PLATEAU_MIN_PATIENCE, PLATEAU_AFTER = 3, 0.1, 10, 0.75


def min_steps_for(fold: int, batch_size: int = 64) -> int:
    """The floor of optimizer steps at this fold: the steps ``recommended_budget(fold)`` gives on
    FLOOR_IMAGES images, batches of ``batch_size`` images (3,780 at f=1, 12,600 at f=4, batch 64)."""
    return recommended_budget(fold)["epochs"] * math.ceil(FLOOR_IMAGES / round_batch(batch_size, fold))


def fit_budget(cfg: TrainConfig, train_images: int, fold: int) -> tuple[TrainConfig, dict]:
    """``cfg`` with its epochs raised to ``cfg.min_steps`` optimizer steps on ``train_images``
    images, and plateau stopping on the added epochs; and what was decided, for run.json.

    Sets that already get ``min_steps`` keep ``cfg`` exactly (every game task of docs/accuracy.md:
    8,000 training images or more). ``min_steps=0`` (an explicit --epochs) keeps it too."""
    steps_per_epoch = math.ceil(math.ceil(train_images / fold) / (cfg.images_per_step(fold) // fold))
    info = {"epochs_asked": cfg.epochs, "steps_per_epoch": steps_per_epoch, "min_steps": cfg.min_steps,
            "extended": False}
    if cfg.min_steps and cfg.epochs * steps_per_epoch < cfg.min_steps:
        epochs = math.ceil(cfg.min_steps / steps_per_epoch)
        patience = cfg.plateau_patience or max(PLATEAU_MIN_PATIENCE, round(PLATEAU_FRACTION * epochs))
        cfg = replace(cfg, epochs=epochs, plateau_patience=patience)
        info["extended"] = True
    info.update(epochs=cfg.epochs, steps=cfg.epochs * steps_per_epoch, plateau_patience=cfg.plateau_patience)
    return cfg, info


# Fields whose value comes from the fold's budget (TrainConfig.for_fold, fit_budget) unless a run gives them.
BY_FOLD = ("epochs", "weight_decay", "min_steps", "plateau_patience")


@dataclass(frozen=True)
class TrainConfig:
    """Fast defaults for a small CPU: Adam(W) with a one-cycle schedule reaches the paper's
    accuracy in tens of epochs where the paper's Adam 1e-4 took up to 1500 (docs/design.md, "Training recipe").

    ``epochs`` and ``weight_decay`` default to a short run of the original; folded models need
    longer: ``TrainConfig.for_fold(fold, ...)`` starts from ``recommended_budget(fold)``."""

    epochs: int = option(30, "passes over the training images (command line default: by fold, the budgets that "
                             "matched the original in docs/accuracy.md: 60 for the original, 100 at f=2 and f=3, "
                             "200 at f=4 and above, raised on small sets to the optimizer steps they give on "
                             "4,000 images, the raised part stopping on a validation plateau; a given value is "
                             "run as given)")
    batch_size: int = option(64, "images per step (rounded down to a multiple of the fold, at least one fold)")
    lr: float = option(3e-3, "peak learning rate")
    weight_decay: float = option(1e-5, "AdamW weight decay (command line default: by fold, the paper's 1e-5 up to "
                                       "f=2 and 0.05 from f=3, which gave folded f=4 models 0.3-0.9 points of test "
                                       "top-1 on five of six game tasks; docs/accuracy.md)")
    optimizer: str = option("adamw", "optimizer", choices=OPTIMIZERS)
    schedule: str = option("onecycle", "learning-rate schedule", choices=SCHEDULES)
    seed: int = option(0, "seed of initialization and fold groups")
    eval_batch_size: int = option(1024, "images per call when validating and testing", cli=False)
    patience: int = option(0, "early stopping: epochs without validation improvement (0 = off)")
    # A floor of optimizer steps: fit_budget raises the epochs to reach it on small data sets (0 = off).
    # for_fold sets it unless epochs are given; an explicit --epochs is run as given.
    min_steps: int = option(0, "the least optimizer steps of a run (0 = none)", cli=False)
    # Plateau stopping: epochs without a new best of the val top-1 averaged over PLATEAU_WINDOW
    # epochs, judged from PLATEAU_AFTER of the epochs on (0 = off); fit_budget sets it on extended runs.
    plateau_patience: int = option(0, "epochs without a new best smoothed validation top-1", cli=False)
    threads: int = option(0, "torch threads per process (0 = leave as is)")
    # bf16 autocast for the forward pass (weights and optimizer stay fp32); "auto" uses it where
    # the CPU has bf16 instructions or on a CUDA GPU (measured faster training, docs/accuracy.md).
    precision: str = option("auto", "training forward pass in bf16 autocast (auto: where the CPU/GPU has bf16 "
                                    "instructions)", choices=PRECISIONS, flag="--train-precision")
    channels_last: bool = option(True, "channels_last memory format while training", cli=False)
    # A BatchNorm after every conv while training, fused into the conv at the end, so the saved
    # model has the paper's layers (foldcnn.train.batchnorm). Without it folded models sit at
    # chance for thousands of steps on a small CPU's budget (docs/accuracy.md).
    train_batchnorm: bool = option(True, "train without the temporary BatchNorm layers (they are fused into the "
                                         "convs after training, so the saved model has the paper's layers either "
                                         "way)", flag="--no-train-batchnorm")
    # Start the classifier at zero weights (a fresh model only): the first steps fit a readout of
    # the random features instead of shrinking them, which kills the narrow last conv's ReLUs.
    zero_init_head: bool = option(True, "keep the builder's classifier init instead of zeros",
                                  flag="--no-zero-init-head")
    # Train every fold slot alike (foldcnn.train.symmetry): weights tied block-circulant across
    # the slots while training, written back as the paper's dense layers at the end. Without it
    # a folded model learns one slot and leaves the others near chance (docs/accuracy.md).
    tie_slots: bool = option(True, "train the folded layers freely instead of tied alike across fold slots (tied "
                                   "training is written back as the same dense layers; free training tends to "
                                   "learn one slot)", flag="--no-tie-slots")
    # None = on for CNNs given by import path (it ended their long flat start, docs/accuracy.md),
    # off for zoo models (their table was measured without it).
    slot_diagonal_init: bool | None = option(
        None, "start a folded model with zero weights between different fold slots, so each slot sees its own "
              "image from the first step (default: on for a CNN given as package.module:Name, off for zoo models; "
              "docs/accuracy.md)")
    device: str = option("cpu", "where to train (auto: cuda if present; one GPU per process under DDP)",
                         choices=DEVICES)
    curriculum: bool = option(False, "start with max(K//10, fold) classes and add max(K//10, 1) at a time (the "
                                     "paper's curriculum, foldcnn.train.curriculum)")
    curriculum_end: float = option(0.6, "fraction of the epochs by which all classes are in")
    # Distillation from an unfolded teacher: loss = (1 - w) * CE + w * distill; see foldcnn.train.distill.
    distill: str = option("none", "distillation loss from --teacher: MSE on logits (the paper's) or KL with "
                                  "temperature (command line default: kl with --teacher, none without)",
                          choices=DISTILL_KINDS)
    distill_weight: float = option(0.5, "loss = (1 - w) * cross-entropy + w * distillation")
    temperature: float = option(4.0, "softening temperature of --distill kl")
    # foldcnn.train.distill_gate (run level): the early check against an undistilled twin.
    distill_check: bool = option(True, "keep the teacher without the early check (by default a distilled run first "
                                       "trains to a quarter of its epochs beside an undistilled twin and goes on "
                                       "without the teacher if it is behind)", flag="--no-distill-check")
    ema_decay: float = option(0.0, "validate and save an exponential moving average of the weights, updated every "
                                   "step with this decay (e.g. 0.999; 0 = off; foldcnn.train.ema)",
                              flag="--ema", metavar="DECAY")
    consistency: float = option(0.0, "folded models: also run each step's images in a second random grouping and "
                                     "add WEIGHT x the divergence between an image's two outputs, so answers stop "
                                     "depending on fold-mates (0 = off; doubles a step's work; docs/accuracy.md "
                                     "'Fold-mates')", metavar="WEIGHT")
    consistency_kind: str = option("kl", "divergence of --consistency: symmetric KL of the softmaxes, squared logit "
                                         "difference, or sharp: KL from each grouping's answer to the other's "
                                         "sharpened one, held fixed", choices=CONSISTENCY_KINDS)
    # foldcnn.train.symmetry.shrink_cross_slot_: decoupled decay of the weights between fold slots.
    cross_slot_decay: float = option(0.0, "folded models: after each step shrink the weights between different "
                                          "fold slots by lr x DECAY, on top of the weight decay; inf holds them at "
                                          "zero, so every image's answer depends on that image alone, whatever its "
                                          "fold-mates and slot (each slot a narrower CNN; pair with "
                                          "--slot-diagonal-init). 0 = off; docs/accuracy.md 'Fold-mates'",
                                     metavar="DECAY")

    def __post_init__(self):
        if self.epochs < 1:
            raise UsageError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise UsageError("batch sizes must be >= 1")
        if not self.lr > 0:
            raise UsageError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.patience < 0 or self.plateau_patience < 0:
            raise UsageError("patience must be >= 0")
        if self.min_steps < 0:
            raise UsageError(f"min_steps must be >= 0 (0 = no floor), got {self.min_steps}")
        if self.device not in DEVICES:
            raise UsageError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not 0 < self.curriculum_end <= 1:
            raise UsageError(f"curriculum_end is the fraction of the epochs by which all classes are in; "
                             f"it must lie in (0, 1], got {self.curriculum_end}")
        if self.distill not in DISTILL_KINDS:
            raise UsageError(f"distill must be one of {', '.join(DISTILL_KINDS)}, got {self.distill!r}")
        if not 0 <= self.distill_weight <= 1:
            raise UsageError(f"distill_weight mixes the losses and must lie in [0, 1], got {self.distill_weight}")
        if not 0 <= self.ema_decay < 1:
            raise UsageError(f"ema_decay must lie in [0, 1) (0 = no weight averaging), got {self.ema_decay}")
        if not self.consistency >= 0:
            raise UsageError(f"consistency is a loss weight and must be >= 0 (0 = off), got {self.consistency}")
        if self.consistency_kind not in CONSISTENCY_KINDS:
            raise UsageError(f"consistency_kind must be one of {', '.join(CONSISTENCY_KINDS)}, "
                             f"got {self.consistency_kind!r}")
        if not self.cross_slot_decay >= 0:
            raise UsageError(f"cross_slot_decay must be >= 0 (0 = off, inf = no weights between fold slots), "
                             f"got {self.cross_slot_decay}")
        if self.cross_slot_decay > 0 and not self.tie_slots:
            raise UsageError("cross_slot_decay acts on the tied fold-slot blocks: it needs tie_slots")
        if not self.temperature > 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")

    @classmethod
    def for_fold(cls, fold: int, **overrides) -> TrainConfig:
        """A config with the budget that matched the original at this fold; ``overrides`` win. Without
        ``epochs`` among them the run also gets this fold's floor of steps (``fit_budget``)."""
        floor = {} if "epochs" in overrides else \
            {"min_steps": min_steps_for(fold, overrides.get("batch_size", cls.batch_size))}
        return cls(**{**recommended_budget(fold), **floor, **overrides})

    def images_per_step(self, fold: int) -> int:
        return round_batch(self.batch_size, fold)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunOptions:
    """Where and how a training run goes, beside what it trains (ModelSpec, DataSpec, TrainConfig):
    its folder, the teacher checkpoint it distils from, resuming, and what it reports.

    A non-empty ``out_dir`` needs ``resume`` (continue its train_state.pt) or ``overwrite``;
    ``regroupings`` (folded models; 0 = off): the test images are also classified in that many other
    random fold groupings, and the flip rate and top-1 spread go into run.json; ``evaluate_only``
    evaluates the model's given weights without training; ``log`` gets one sentence per note worth
    telling the user (the library never prints); ``on_epoch`` gets each epoch's metrics row, and an
    exception it raises stops the run there (train_state.pt kept)."""

    out_dir: str = option(help="run directory (checkpoint/, metrics.jsonl, run.json, train_state.pt)", flag="--out")
    teacher: str | None = option(None, "unfolded (fold=1) checkpoint of the same task to distill from")
    allow_folded_teacher: bool = option(False, "accept a teacher with fold > 1")
    resume: bool = option(False, "continue the run in --out from its train_state.pt")
    overwrite: bool = option(False, "start a new run in a non-empty --out, replacing the run there (without it or "
                             "--resume a non-empty --out is an error)")
    regroupings: int = option(10, "folded models: after training, classify the test images in R other random fold "
                              "groupings and record the flip rate and top-1 spread in run.json (0 = off)",
                              metavar="R")
    state_every_steps: int = option(DEFAULT_STATE_EVERY_STEPS, "also write train_state.pt every N steps within an "
                                    "epoch (0 = after each epoch only)", flag="--save-every-steps")
    quiet: bool = option(False, "no progress bar")
    evaluate_only: bool = option(False, cli=False)
    command: tuple[str, ...] | None = option(None, cli=False)  # what run.json records (default sys.argv)
    log: object = option(None, cli=False)  # Callable[[str], None]
    on_epoch: object = option(None, cli=False)  # Callable[[dict], None]

    def __post_init__(self):
        if self.resume and self.overwrite:
            raise UsageError("resume and overwrite exclude each other: --resume continues the run in --out, "
                             "--overwrite starts a new one there")
        if isinstance(self.regroupings, bool) or not isinstance(self.regroupings, int) or self.regroupings < 0:
            raise UsageError(f"regroupings must be an int >= 0 (0 = off), got {self.regroupings!r}")
        if self.state_every_steps < 0:
            raise UsageError(f"state_every_steps must be >= 0 (0 = after each epoch only), got {self.state_every_steps}")

    def replace(self, **changes) -> RunOptions:
        return replace(self, **changes)
