"""The zoo's game CNNs at half width: what a folded model whose fold slots share no
weights (``foldcnn train --cross-slot-decay inf``) computes per image, as an unfolded CNN of its own,
for ``foldcnn bench --models experiments.published.narrow_models:half_TASK`` and ``foldcnn train --model ...``.

At f=4 the folded widths are 2x the original's (sqrt(4)); with no weights between slots, each slot
is the original at width x 0.5: ``half_TASK`` with the paper's exact widths (channel multiple 1), one
slot of the default f=4 model, e.g. apex-squad-count 32-32-32-32-8 -> 16-16-16-16-4; ``slot32_TASK``
one slot of the f=4 model with ``--channel-multiple 32`` (widths 64-64-64-64-32 over four slots),
16-16-16-16-8.
"""

from __future__ import annotations

from foldcnn.models import create_model


def _half(task: str, channel_multiple: int = 1):
    def build(input_shape=None, **kwargs):  # foldcnn train passes input_shape=(C, H, W) and num_classes
        if input_shape is not None:
            kwargs["input_size"] = tuple(input_shape[1:])
        return create_model(task, fold=1, width_mult=0.5, channel_multiple=channel_multiple, **kwargs)
    build.__name__ = f"{'half' if channel_multiple == 1 else 'slot32'}_{task.replace('-', '_')}"
    return build


half_apex_squad_count = _half("apex-squad-count")
half_sot_coin_count = _half("sot-coin-count")
half_sot_timer = _half("sot-timer")
half_lol_gold_fraction = _half("lol-gold-fraction")
slot32_apex_squad_count = _half("apex-squad-count", 8)
slot32_sot_coin_count = _half("sot-coin-count", 8)
slot32_sot_timer = _half("sot-timer", 8)
slot32_lol_gold_fraction = _half("lol-gold-fraction", 8)
