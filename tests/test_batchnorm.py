"""Train-time BatchNorm: added for training, fused away exactly, architecture unchanged."""

import pytest
import torch
from torch import nn

from foldcnn import count_params, create_model
from foldcnn.train.batchnorm import (
    ConvBN,
    add_train_batchnorm_,
    fuse_train_batchnorm_,
    has_train_batchnorm,
)


@pytest.mark.parametrize("name,fold", [("sot-coin-count", 1), ("lol-gold-fraction", 4), ("noscope-coral", 2)])
def test_fused_model_equals_trained_model_in_eval(name, fold):
    torch.manual_seed(0)
    model = create_model(name, fold=fold)
    params, keys = count_params(model), set(model.state_dict())
    add_train_batchnorm_(model)
    assert has_train_batchnorm(model)
    model.train()
    x = torch.rand(6, *model.folded_input_shape)
    for _ in range(3):  # move the running statistics and affine params away from identity
        model(x * torch.rand(1))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    with torch.no_grad():
        before = model(x)
        fuse_train_batchnorm_(model)
        after = model(x)
    assert not has_train_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert count_params(model) == params and set(model.state_dict()) == keys
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_every_biased_conv_gets_one_batchnorm_and_twice_is_an_error():
    model = create_model("sot-timer", fold=2)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    add_train_batchnorm_(model)
    assert sum(isinstance(m, ConvBN) for m in model.modules()) == convs
    with pytest.raises(ValueError, match="already"):
        add_train_batchnorm_(model)


def test_models_with_their_own_batchnorm_are_left_alone():
    model = create_model("cifar-resnet18", fold=1)
    keys = set(model.state_dict())
    add_train_batchnorm_(model)
    assert set(model.state_dict()) == keys


def test_channels_last_is_kept():
    model = create_model("sot-coin-count", fold=2).to(memory_format=torch.channels_last)
    add_train_batchnorm_(model).to(memory_format=torch.channels_last)
    model.eval()
    fuse_train_batchnorm_(model)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_fusing_in_train_mode_gives_the_eval_mode_function():
    # Training may end with the model in train mode; the fused conv must still use the running statistics.
    torch.manual_seed(0)
    model = add_train_batchnorm_(create_model("apex-squad-count", fold=2))
    x = torch.rand(4, *model.folded_input_shape)
    model.train()
    with torch.no_grad():
        model(x * 2)  # running statistics now differ from the batch statistics of x
        expected = model.eval()(x)
        fuse_train_batchnorm_(model.train())
        got = model.eval()(x)
    assert not has_train_batchnorm(model)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
