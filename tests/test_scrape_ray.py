"""`foldcnn scrape --engine ray`: one Ray task per video, the same rows and events as local."""

import csv

import pytest

from foldcnn.cli import main
from test_scrape import setup  # noqa: F401 - the module fixture: a tiny video, checkpoints, layout
from tiny_data import one_thread  # noqa: F401

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # a new cluster, never a running one
    yield
    ray.shutdown()


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_ray_rows_and_events_equal_local(setup, cluster, tmp_path):  # noqa: F811 - the imported fixture
    root, video, _, _ = setup
    args = [str(video), str(video), "--layout", str(root / "layout.json"), "--hold", "1", "--threads", "1"]
    assert main(["scrape", *args, "--out", str(tmp_path / "local.csv"), "--events", str(tmp_path / "le.csv")]) == 0
    assert main(["scrape", *args, "--out", str(tmp_path / "ray.csv"), "--events", str(tmp_path / "re.csv"),
                 "--engine", "ray"]) == 0
    assert _read(tmp_path / "ray.csv") == _read(tmp_path / "local.csv")
    assert _read(tmp_path / "re.csv") == _read(tmp_path / "le.csv")


def test_ray_refuses_standard_input(setup, capsys, tmp_path):  # noqa: F811
    root, _, _, _ = setup
    assert main(["scrape", "-", "--layout", str(root / "layout.json"), "--out", str(tmp_path / "o.csv"),
                 "--engine", "ray"]) == 2
    assert "standard input" in capsys.readouterr().err
