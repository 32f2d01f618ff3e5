"""train_model gives bit-identical results across refactors of the loop.

The references were recorded by running this file's ``record()`` at base commit 215a6ca, before
train_model was split into phases (python tests/test_loop.py prints them). They cover the final
weights, the metrics history without timings, the per-step losses and the features dict. Bits
depend on torch's kernels, so the references hold only for the torch build and CPU capability
they were recorded with; elsewhere the test is skipped and says how to re-record.
A deliberate change to the numerics (foldcnn.train.ema, foldcnn.train.batchnorm, the optimizer)
must re-record them at the commit before the refactor it is meant to check.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from foldcnn import create_model
from foldcnn.train.config import TrainConfig
from foldcnn.train.loop import train_model
from tiny_data import easy_dataset

RECORDED_ON = ("2.13.0+cpu", "AVX512")
CASES = {
    # defaults: AdamW one-cycle, BatchNorm while training, tied fold slots, channels_last
    "plain": dict(fold=2, cfg=dict(epochs=3, batch_size=16, precision="fp32")),
    "curriculum+distill+patience": dict(fold=2, cfg=dict(
        epochs=9, batch_size=18, precision="fp32", curriculum=True, curriculum_end=0.5, distill="kl",
        distill_weight=0.3, patience=1, optimizer="sgd", schedule="cosine", channels_last=False)),
    "ema+bf16+untied": dict(fold=2, cfg=dict(
        epochs=3, batch_size=20, precision="bf16", ema_decay=0.9, optimizer="rmsprop", schedule="constant",
        train_batchnorm=False, tie_slots=False, zero_init_head=False)),
}
# Re-recorded after the merge of conv-BN fusion on torch.nn.utils.fusion.fuse_conv_bn_weights: the
# two cases with train-time BatchNorm differ from 215a6ca only by the fusion's float rounding (with
# the old fusion arithmetic the refactored loop reproduced 215a6ca's hashes exactly). Re-recorded
# again when the end of training began pooling tied models' BatchNorm statistics over the fold
# slots (foldcnn.train.symmetry.pool_slot_statistics_) and reporting it in the features: with the
# pooling made a no-op and that key removed, all three cases still gave the hashes before it.
REFERENCE = {
    'plain': 'ad852b14ae95d1f86d192822a36adf6255d7b90b3514283ad6591ae648a0c282',
    'curriculum+distill+patience': '1e68c9ef830ebba919efc1b58282358be17912dad0400eb9c5959b6c5e2f52cb',
    'ema+bf16+untied': '8c1228cf5720370c514c369dc9c9406a3e64c000545fa3d76dad18cff537173b',
}


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _sha256_of_run(case: str, out_dir) -> str:
    spec = CASES[case]
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=spec["fold"], num_classes=3, input_size=(16, 16))
    train, val = easy_dataset(61, 0), easy_dataset(23, 1)
    cfg = TrainConfig(threads=1, **spec["cfg"])
    teacher = torch.randn(61, 3, generator=torch.Generator().manual_seed(5)) if cfg.distill != "none" else None
    losses = []
    result = train_model(model, train, val, cfg, out_dir=out_dir, progress=False, teacher_logits=teacher,
                         state_every_steps=2, on_step=lambda info: losses.append(info["loss"]))
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}".encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    history = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in result.history]
    record = [history, losses, result.best_epoch, result.best_val_top1, result.features]
    h.update(json.dumps(record, sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("case", CASES)
def test_train_model_matches_the_recorded_run(case, tmp_path):
    here = (torch.__version__, torch.backends.cpu.get_cpu_capability())
    if here != RECORDED_ON:
        pytest.skip(f"references recorded with torch/CPU {RECORDED_ON}, this is {here}; "
                    "re-record with `python tests/test_loop.py` at the commit before the change to check")
    assert _sha256_of_run(case, tmp_path) == REFERENCE[case]


def record() -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return {case: _sha256_of_run(case, f"{tmp}/{case}") for case in CASES}


if __name__ == "__main__":
    print((torch.__version__, torch.backends.cpu.get_cpu_capability()))
    for case, digest in record().items():
        print(f"    {case!r}: {digest!r},")
