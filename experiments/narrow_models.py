"""The zoo's game CNNs at half width (issue 22): what a folded model whose fold slots share no
weights (``foldcnn train --cross-slot-decay inf``) computes per image, as an unfolded CNN of its own,
for ``foldcnn bench --models experiments.narrow_models:half_TASK``.

At f=4 the folded widths are 2x the original's (sqrt(4)); with no weights between slots, each slot
is the original at width x 0.5 with the paper's exact widths (channel multiple 1), e.g.
apex-squad-count 32-32-32-32-8 -> 16-16-16-16-4.
"""

from __future__ import annotations

from foldcnn.models import create_model


def _half(task: str):
    def build(input_shape=None, **kwargs):  # foldcnn train passes input_shape=(C, H, W) and num_classes
        if input_shape is not None:
            kwargs["input_size"] = tuple(input_shape[1:])
        return create_model(task, fold=1, width_mult=0.5, channel_multiple=1, **kwargs)
    build.__name__ = f"half_{task.replace('-', '_')}"
    return build


half_apex_squad_count = _half("apex-squad-count")
half_sot_coin_count = _half("sot-coin-count")
half_sot_timer = _half("sot-timer")
half_lol_gold_fraction = _half("lol-gold-fraction")
