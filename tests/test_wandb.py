"""logger.wandb=true: every TensorBoard scalar and the resolved config go to W&B, offline here."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dgsolve import wandb_mirror
from dgsolve.artifacts import RunArtifacts
from dgsolve.errors import ConfigError
from dgsolve.run import run
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
#: the quickest game that logs episodes, losses and an evaluation
WANDB_TINY = [*TINY, "env=matrix", "algo=stackelberg_ppo"]


def wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version)
    then a leveldb log (32 KiB blocks of records ``crc:u32 length:u16 type:u8 data``, a record
    split FIRST/MIDDLE/LAST across blocks); see leveldb's doc/log_format.md."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, part = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's zero trailer
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        part += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            yield record
            part = b""


def tensorboard_points(tb_dir: Path) -> dict[tuple[str, int], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {(t, e.step): e.value for t in acc.Tags()["scalars"] for e in acc.Scalars(t)}


def test_a_run_mirrors_its_scalars_and_config_to_wandb(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg([*WANDB_TINY, "logger.wandb=true"])
    run(cfg, tmp_path)
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    (log,) = offline.glob("run-*.wandb")
    records = list(wandb_records(log))
    kinds = [r.WhichOneof("record_type") for r in records]

    (started,) = [r.run for r in records if r.HasField("run")]
    assert started.display_name == tmp_path.name
    assert started.project == "dgsolve"
    config = {i.key: json.loads(i.value_json) for i in started.config.update if i.key != "_wandb"}
    assert config == OmegaConf.to_container(cfg, resolve=True)

    points = {}
    for r in records:
        if r.HasField("history"):
            row = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item
            }
            for tag, value in row.items():
                if not tag.startswith("_") and tag != wandb_mirror.STEP_METRIC:
                    points[(tag, row[wandb_mirror.STEP_METRIC])] = value
    tensorboard = tensorboard_points(tmp_path / "tb")
    assert {"charts/episodic_return/row", "losses/column/policy_loss"} <= {t for t, _ in points}
    assert points.keys() == tensorboard.keys()  # every scalar, same tag, same step
    assert points == pytest.approx(tensorboard, rel=1e-6)  # TensorBoard keeps float32
    assert kinds.count("exit") == 1  # finished on close
    (exit_record,) = [r.exit for r in records if r.HasField("exit")]
    assert exit_record.exit_code == 0


def test_a_run_without_wandb_never_imports_it(tmp_path):
    script = f"""
        import sys
        from dgsolve.run import run
        from tests.conftest import compose_config
        run(compose_config({WANDB_TINY!r}), {str(tmp_path)!r})
        assert "wandb" not in sys.modules, "wandb was imported"
        assert "dgsolve.wandb_mirror" in sys.modules  # train.py loaded it; it left wandb be
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "wandb").exists()


def test_wandb_missing_fails_the_run_naming_pip_install(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ConfigError, match="pip install wandb"):
        run(make_cfg([*WANDB_TINY, "logger.wandb=true"]), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_config_without_logger_section_mirrors_nothing(tmp_path):
    assert wandb_mirror.from_config(OmegaConf.create({"seed": 0}), tmp_path) is None


class FakeRun:
    def __init__(self):
        self.logged: list[dict] = []
        self.finished = 0

    def log(self, row: dict) -> None:
        self.logged.append(row)

    def finish(self) -> None:
        self.finished += 1


def test_mirror_logs_one_row_per_step_against_env_step():
    fake = FakeRun()
    mirror = wandb_mirror.WandbMirror(fake)
    mirror.scalar("a", 1.0, 32)
    mirror.scalar("b", 2.0, 32)
    mirror.scalar("a", 3.0, 16)  # an earlier step after a later one: W&B's own step still grows
    mirror.scalar("a", 4.0, 16)  # the same tag again at the same step: its own row
    assert fake.logged == [{"a": 1.0, "b": 2.0, "env_step": 32}, {"a": 3.0, "env_step": 16}]
    mirror.close()
    assert fake.logged[-1] == {"a": 4.0, "env_step": 16}
    assert fake.finished == 1


def test_run_artifacts_feed_and_close_their_mirror(tmp_path):
    fake = FakeRun()
    art = RunArtifacts(tmp_path, ("a",), mirror=wandb_mirror.WandbMirror(fake))
    art.scalar("charts/x", 1.5, 8)
    art.scalar("charts/x", float("nan"), 9)  # what TensorBoard skips, the mirror skips
    art.close()
    art.close()
    assert fake.logged == [{"charts/x": 1.5, "env_step": 8}]
    assert fake.finished == 1
