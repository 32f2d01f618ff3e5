"""fold_model: the zoo's widths for zoo models, shapes for user CNNs, loud refusals."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from foldcnn import count_params, create_model, fold_images, list_models, unfold_logits
from foldcnn.models.transform import FoldError, fold_model

C, H, W, K = 3, 20, 24, 7


class Block(nn.Module):
    """Residual add, and a channel concatenation feeding a conv."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c // 2, 1)
        self.mix = nn.Conv2d(c + c // 2, c, 1)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x))) + x
        return self.mix(torch.cat([y, self.conv2(y)], dim=1))


class UserCNN(nn.Module):
    def __init__(self, c=C, k=K):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.block = Block(16)
        self.gap = nn.AdaptiveAvgPool2d((2, 3))
        self.drop = nn.Dropout(0.1)
        self.fc1 = nn.Linear(16 * 2 * 3, 32)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(32, k)

    def forward(self, x):
        x = self.gap(self.block(self.pool(self.stem(x))))
        x = x.view(x.size(0), -1)
        return self.fc2(self.drop(self.act(self.fc1(x))))


def _ref_count(name, fold, cm):
    with torch.device("meta"):  # parameter count only: skip allocating and initializing weights
        return count_params(create_model(name, fold=fold, channel_multiple=cm))


ZOO_CASES = [
    (name, f, cm) for name in list_models() if name != "cifar-resnet18"
    for f in (1, 2, 3, 4) for cm in (1, 8)
] + [("cifar-resnet18", 1, 8), ("cifar-resnet18", 3, 1)]


@pytest.mark.parametrize("name,fold,cm", ZOO_CASES)
def test_zoo_param_counts_match_the_builders(name, fold, cm):
    model = create_model(name)
    folded = fold_model(model, fold, model.input_shape, channel_multiple=cm)
    assert count_params(folded) == _ref_count(name, fold, cm)
    interface = (folded.fold, folded.num_classes, folded.input_shape)
    assert interface == (fold, model.num_classes, model.input_shape)


def test_fold_1_keeps_the_architecture_and_the_function():
    torch.manual_seed(0)
    model = UserCNN().eval()
    folded = fold_model(model, 1, (C, H, W))
    sd, fsd = model.state_dict(), folded.state_dict()
    assert [(k, v.shape) for k, v in sd.items()] == [(k, v.shape) for k, v in fsd.items()]
    for name, m in folded.named_modules():
        if not list(m.children()) and name:
            assert type(m) is type(model.get_submodule(name))
    folded.load_state_dict(sd)
    folded.eval()
    x = torch.randn(5, C, H, W)
    torch.testing.assert_close(folded(x), model(x))
    torch.testing.assert_close(folded.classify(x), model(x))


@pytest.mark.parametrize("fold", [2, 3, 4])
def test_user_cnn_folds_and_runs(fold):
    model = UserCNN()
    folded = fold_model(model, fold, (C, H, W), channel_multiple=1)
    assert folded.get_submodule("stem.0").in_channels == fold * C
    assert folded.get_submodule("stem.0").out_channels == int(16 * fold**0.5 + 1e-9)
    assert folded.fc2.out_features == fold * K
    assert folded.block.mix.in_channels == folded.block.conv1.out_channels + folded.block.conv2.out_channels
    images = torch.randn(2 * fold, C, H, W)
    out = folded(fold_images(images, fold))
    assert out.shape == (2, fold * K)
    per_image = unfold_logits(folded.eval()(fold_images(images, fold)), fold)
    torch.testing.assert_close(folded.classify(images), per_image)
    assert folded.eval().classify(images[:3]).shape == (3, K)  # padding to a multiple of f
    assert folded.training is False and copy.deepcopy(folded).fold == fold


def test_original_model_is_left_alone():
    model = UserCNN().train()
    before = copy.deepcopy(model.state_dict())
    folded = fold_model(model, 2, (C, H, W))
    assert model.training and folded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not set(map(id, model.parameters())) & set(map(id, folded.parameters()))


class LeNet(nn.Module):
    """x.view(-1, 16 * 5 * 5) hard-codes the channels: rewritten to a per-image flatten."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.view(-1, 16 * 5 * 5))))


class SqueezeExcite(nn.Module):
    """Depthwise conv, and an SE gate reshaped with x.view(b, c, 1, 1); head is a 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc1, self.fc2 = nn.Linear(16, 4), nn.Linear(4, 16)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        x = F.relu(self.dw(F.relu(self.conv(x))))
        b, c, _, _ = x.size()
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3)))))).view(b, c, 1, 1)
        return torch.flatten(F.adaptive_avg_pool2d(self.head(x * s), 1), 1)


@pytest.mark.parametrize("model,shape,k", [(LeNet(), (1, 32, 32), 10), (SqueezeExcite(), (3, 16, 16), 5)])
def test_other_flatten_forms_fold(model, shape, k):
    folded = fold_model(model, 4, shape)
    assert folded(torch.randn(3, 4 * shape[0], *shape[1:])).shape == (3, 4 * k)
    same = fold_model(model, 1, shape)
    assert count_params(same) == count_params(model)


@pytest.mark.parametrize("flatten", [
    lambda x: x.flatten(1), lambda x: torch.flatten(x, 1), lambda x: x.reshape(x.shape[0], -1),
    lambda x: x.view(-1, 8), lambda x: x.squeeze(), lambda x: torch.squeeze(x, -1).squeeze(-1),
    nn.Flatten(),
])
def test_per_image_flattens_fold(flatten):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.flatten, self.fc = nn.Conv2d(C, 8, 3), flatten, nn.Linear(8, K)

        def forward(self, x):
            return self.fc(self.flatten(F.adaptive_max_pool2d(self.conv(x), 1)))

    folded = fold_model(Net(), 4, (C, H, W))
    assert folded(torch.randn(1, 4 * C, H, W)).shape == (1, 4 * K)  # batch 1: squeeze() kept N


def test_folded_model_trains():
    torch.manual_seed(0)
    folded = fold_model(UserCNN(), 2, (C, H, W))
    images, labels = torch.rand(8, C, H, W), torch.randint(0, K, (8,))
    opt = torch.optim.Adam(folded.parameters(), lr=1e-2)

    def loss():
        return F.cross_entropy(unfold_logits(folded(fold_images(images, 2)), 2), labels)

    first = loss()
    first.backward()
    opt.step()
    assert loss().item() < first.item()


# --- refusals: each names the offending layer ---------------------------------------------

class Wrap(nn.Module):
    """conv -> ``mid`` -> pooled linear head; ``mid`` is the construct under test."""

    def __init__(self, mid: nn.Module, cin=C):
        super().__init__()
        self.conv, self.mid = nn.Conv2d(cin, 8, 3, padding=1), mid
        self.fc = nn.Linear(8, K)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.mid(self.conv(x)), 1), 1))


class Gate(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class Attention(nn.Module):
    def forward(self, x):
        q = x.flatten(2)
        return F.scaled_dot_product_attention(q, q, q).view_as(x)


class Slice(nn.Module):
    def forward(self, x):
        return x[:, :4].repeat(1, 2, 1, 1)


class BadView(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), 8, -1).unsqueeze(-1)


class HardBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(C, 8, 3), nn.Linear(8, K)

    def forward(self, x):  # passes at the dummy batch (2), breaks at any other
        return self.fc(self.conv(x).amax((2, 3)).reshape(2, -1))


class Unknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.InstanceNorm2d(8, affine=True)

    def forward(self, x):
        return self.norm(x)


class AddInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, padding=1)
        self.fc = nn.Linear(C, K)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.conv(x) + x, 1), 1))


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Wrap(nn.Identity())

    def forward(self, x):
        return F.softmax(self.inner(x), dim=1)


class NoHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(C, 8, 3)

    def forward(self, x):
        y = torch.flatten(F.adaptive_avg_pool2d(self.conv(x), 1), 1)
        return y + y.mean(1, keepdim=True)


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.rnn = nn.Conv2d(C, 8, 3), nn.LSTM(8, 8)

    def forward(self, x):
        return self.rnn(self.conv(x).flatten(2).permute(2, 0, 1))[0][-1]


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, x):
        return self.emb(x.long()).flatten(1)


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(C * H, 8, 3)

    def forward(self, x):
        return self.conv(x.flatten(1, 2)).mean(-1)


@pytest.mark.parametrize("model,names", [
    (Wrap(nn.Conv2d(8, 8, 3, padding=1, groups=2)), ["mid", "groups=2"]),
    (Wrap(Gate()), ["mid", "control flow"]),
    (Wrap(nn.Sequential(nn.Identity(), Attention())), ["scaled_dot_product_attention"]),
    (Wrap(Slice()), ["getitem", "slicing"]),
    (Wrap(BadView()), ["view", "per-image flatten"]),
    (HardBatch(), ["reshape", "per-image flatten"]),
    (Wrap(Unknown()), ["mid.norm", "InstanceNorm2d"]),
    (AddInput(), ["add", "size of tensor"]),
    (Softmaxed(), ["softmax"]),
    (NoHead(), ["not produced by one Linear or Conv2d", "add"]),
    (Recurrent(), ["rnn", "LSTM"]),
    (Embed(), ["emb", "Embedding"]),
    (Conv1dNet(), ["conv", "Conv1d"]),
])
def test_unsupported_constructs_raise_fold_error_naming_the_layer(model, names):
    with pytest.raises(FoldError) as err:
        fold_model(model, 2, (C, H, W))
    for name in names:
        assert name in str(err.value)


def test_multihead_attention_is_refused():
    class MHA(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.attn = nn.Conv2d(C, 8, 3), nn.MultiheadAttention(8, 2)

        def forward(self, x):
            s = self.conv(x).flatten(2).permute(2, 0, 1)
            return self.attn(s, s, s)[0].mean(0)

    with pytest.raises(FoldError, match="'attn'.*attention"):
        fold_model(MHA(), 2, (C, H, W))


def test_bad_arguments():
    model = UserCNN()
    with pytest.raises(ValueError):
        fold_model(model, 0, (C, H, W))
    with pytest.raises(TypeError):
        fold_model(model, 2.5, (C, H, W))
    with pytest.raises(FoldError, match="input_shape"):
        fold_model(model, 2, (H, W))
    with pytest.raises(FoldError, match="fails on the given input_shape"):
        fold_model(model, 2, (C + 1, H, W))
    with pytest.raises(FoldError, match="already folded"):
        fold_model(create_model("sot-timer", fold=2), 2)
    folded = fold_model(create_model("sot-timer"), 2)  # input_shape defaults to model.input_shape
    assert folded.input_shape == create_model("sot-timer").input_shape


def test_norms_and_prelu_widen():
    model = nn.Sequential(
        nn.Conv2d(C, 16, 3), nn.GroupNorm(4, 16), nn.PReLU(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 12), nn.LayerNorm(12), nn.BatchNorm1d(12), nn.Linear(12, K),
    )
    folded = fold_model(model, 2, (C, H, W), channel_multiple=4)
    assert [folded.get_submodule(i).num_channels if i == "1" else folded.get_submodule(i).num_parameters
            for i in ("1", "2")] == [24, 24]
    assert folded.get_submodule("6").normalized_shape == (16,)  # int(12 * 1.414) = 16
    assert folded(torch.randn(3, 2 * C, H, W)).shape == (3, 2 * K)
    with pytest.raises(FoldError, match="layer '1'.*num_groups=4"):
        fold_model(model, 2, (C, H, W), channel_multiple=1)  # 22 channels


def test_pickle_and_deepcopy_keep_the_interface():
    import pickle

    folded = fold_model(UserCNN(), 2, (C, H, W)).eval()
    images = torch.randn(3, C, H, W)
    for other in (pickle.loads(pickle.dumps(folded)), copy.deepcopy(folded)):
        assert (other.fold, other.num_classes, other.input_shape) == (2, K, (C, H, W))
        assert list(other.state_dict()) == list(folded.state_dict())
        torch.testing.assert_close(other.classify(images), folded.classify(images))


@pytest.mark.parametrize("fold", [1, 4])
def test_folded_layers_start_with_pytorchs_default_init_not_the_papers(fold):
    torch.manual_seed(0)
    folded = fold_model(UserCNN(), fold, (C, H, W))
    for name in ("fc1", "fc2", "stem.0"):
        w = folded.get_submodule(name).weight
        bound = 1 / (w[0].numel() ** 0.5)  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert w.abs().max() <= bound + 1e-6
        assert w.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.25)  # not the paper's N(0, 0.01)
    assert folded.get_submodule("fc1").bias.abs().max() > 0  # the default bias init, not zeros
