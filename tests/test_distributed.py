import json
import os
import sys

import pytest
import torch

from foldcnn.train.distributed import DistributedError, dist_info, launch, shard_groups

TESTS = os.path.dirname(__file__)


def test_shards_are_disjoint_and_cover_the_step():
    chunk = torch.arange(10 * 4).view(10, 4)
    shards = [shard_groups(chunk, r, 3) for r in range(3)]
    assert sorted(torch.cat(shards).view(-1).tolist()) == list(range(40))
    assert [len(s) for s in shards] == [4, 3, 3]
    # A rank left without a group still runs one (all padding) so ranks stay in lockstep.
    few = shard_groups(chunk[:1], 1, 2)
    assert few.shape == (1, 4) and (few == -1).all()
    assert shard_groups(chunk, 0, 1) is chunk


def test_no_process_group_means_one_rank():
    info = dist_info()
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)


def _train_rank(out: str, fold: int, bn: bool = False) -> None:
    """One rank: each starts from different random weights; DDP must make them one model."""
    sys.path.insert(0, TESTS)
    from test_train import easy_dataset

    from foldcnn import create_model
    from foldcnn.train.config import TrainConfig
    from foldcnn.train.loop import train_model

    rank = dist_info().rank
    torch.manual_seed(100 + rank)
    model = create_model("lol-gold-fraction", fold=fold, num_classes=3, input_size=(16, 16))
    cfg = TrainConfig(epochs=2, batch_size=24, precision="fp32", curriculum=True, train_batchnorm=bn)
    result = train_model(model, easy_dataset(150, 0), easy_dataset(40, 1), cfg, out_dir=f"{out}/run",
                         progress=False, state_every_steps=2)
    torch.save({"state": model.state_dict(), "history": result.history, "world": result.features["world_size"]},
               f"{out}/rank{rank}.pt")


def test_two_cpu_processes_train_one_model(tmp_path):
    launch(_train_rank, 2, (str(tmp_path), 2))
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a["world"] == b["world"] == 2
    for k, v in a["state"].items():
        assert torch.equal(v, b["state"][k]), k
    def strip(history):
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]

    assert strip(a["history"]) == strip(b["history"])  # metrics reduced over ranks, validated once
    assert a["history"][-1]["val_top1"] > 0.5  # chance is 1/3
    # Only rank 0 wrote the run directory.
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    # Same grouping, shards summed: the two-process run follows the one-process run closely.
    torch.manual_seed(100)
    sys.path.insert(0, TESTS)
    from test_train import easy_dataset

    from foldcnn import create_model
    from foldcnn.train.config import TrainConfig
    from foldcnn.train.loop import train_model

    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(16, 16))
    one = train_model(model, easy_dataset(150, 0), easy_dataset(40, 1),
                      TrainConfig(epochs=2, batch_size=24, precision="fp32", curriculum=True,
                                  train_batchnorm=False), progress=False)
    assert [r["train_loss"] for r in one.history] == pytest.approx([r["train_loss"] for r in a["history"]], abs=2e-3)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, a["state"][k], atol=2e-3, rtol=1e-2)


def test_train_batchnorm_statistics_agree_across_ranks(tmp_path):
    # Each rank normalizes its own shard; the running statistics are synced from rank 0 so the
    # fused checkpoint is one model.
    launch(_train_rank, 2, (str(tmp_path), 2, True))
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k, v in a["state"].items():
        assert torch.equal(v, b["state"][k]), k


def _fail_on_rank_1() -> None:
    if dist_info().rank == 1:
        raise ValueError("rank one has bad data")


def test_a_failing_rank_is_reported():
    with pytest.raises(DistributedError, match="rank 1 failed: ValueError: rank one has bad data"):
        launch(_fail_on_rank_1, 2)


@pytest.mark.slow
def test_cli_nproc_2(tmp_path, capsys):
    from foldcnn.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--task", "sot-coin-count", "--fold", "2", "--out", str(out), "--train-size", "96",
               "--val-size", "32", "--test-size", "32", "--epochs", "2", "--nproc", "2", "--quiet"])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["features"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert (out / "checkpoint" / "model.safetensors").exists()


def test_cli_nproc_checks_input_before_starting_processes(tmp_path, capsys):
    from foldcnn.cli import main

    assert main(["train", "--task", "sot-coin-count", "--model", "nope", "--nproc", "2", "--out", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing"), "--model", "sot-coin-count", "--nproc", "2",
                 "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def _train_rank_cuda(out: str) -> None:
    sys.path.insert(0, TESTS)
    from test_train import easy_dataset

    from foldcnn import create_model
    from foldcnn.train.config import TrainConfig
    from foldcnn.train.loop import train_model

    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(16, 16))
    train_model(model, easy_dataset(150, 0), easy_dataset(40, 1), TrainConfig(epochs=1, device="cuda"),
                progress=False)
    torch.save(model.cpu().state_dict(), f"{out}/rank{dist_info().rank}.pt")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_nccl(tmp_path):
    launch(_train_rank_cuda, 2, (str(tmp_path),), device="cuda")
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_gpu_trains():
    sys.path.insert(0, TESTS)
    from test_train import easy_dataset

    from foldcnn import create_model
    from foldcnn.train.config import TrainConfig
    from foldcnn.train.loop import train_model

    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(16, 16))
    result = train_model(model, easy_dataset(300, 0), easy_dataset(90, 1), TrainConfig(epochs=4, device="cuda"),
                         progress=False)
    assert result.features["device"] == "cuda:0" and result.best_val_top1 > 0.6
