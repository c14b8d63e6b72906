"""Shared fixtures: one tiny trained run (64-pixel cells, one branch) built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained run folder: data (train 2, val 1, test 2 shards of 10 cells at 64 px), base and one branch."""
    from heatlab.data.shards import write_cells
    from heatlab.models.training import TrainConfig
    from heatlab.run.training import train_run

    root = tmp_path_factory.mktemp("tiny")
    write_cells(root / "data", size=64, seed=3, shards={"train": 2, "val": 1, "test": 2}, shard_size=10)
    config = TrainConfig(epochs=1, branches=1, branch_epochs=1, batch_size=10, eval_every=1, n_l=1, seed=3)
    train_run(root / "data", root / "run", config)
    return root / "run"


@pytest.fixture(scope="session")
def tiny_wine_run(tmp_path_factory):
    """A trained run on sklearn's wine table (13 features, 3 classes): drybeanfpa, base and one branch, seconds."""
    from heatlab.models.training import TrainConfig
    from heatlab.run.training import train_run

    run = tmp_path_factory.mktemp("wine") / "run"
    train_run("wine", run, TrainConfig(model="drybeanfpa", epochs=2, branches=1, branch_epochs=1, batch_size=16, seed=3))
    return run


@pytest.fixture(scope="session")
def png_claiming():
    """``claiming(path, width, height)``: write a PNG whose header claims ``width × height`` pixels
    (its pixel data is one bit, so nothing big is made) and return ``path``."""
    import io
    import zlib

    from PIL import Image

    def claiming(path, width: int, height: int):
        """A PNG whose header claims ``width × height`` pixels (its pixel data is one bit: nothing big is made)."""
        buf = io.BytesIO()
        Image.new("1", (1, 1)).save(buf, format="PNG")
        data = bytearray(buf.getvalue())
        data[16:20], data[20:24] = width.to_bytes(4, "big"), height.to_bytes(4, "big")  # IHDR width, height
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
        path.write_bytes(bytes(data))
        return path

    return claiming
