"""Bargaining runs: self-play PPO/MAPPO with periodic evaluation, and task=crossplay."""

from __future__ import annotations

import csv
import json

import pytest
from omegaconf import OmegaConf

from dgsolve.errors import ConfigError
from dgsolve.eval.crossplay import play_matches
from dgsolve.games.bargain.baselines import make_baseline
from dgsolve.run import run

BARGAIN_TINY = [
    "env=bargain",
    "env.num_envs=64",
    "algo.num_steps=6",
    "algo.total_timesteps=768",
    "algo.num_epochs=1",
    "algo.num_minibatches=2",
    "task.eval_episodes=4",
    "task.eval_games=200",
    "task.progress=false",
    "hardware=cpu",
]


@pytest.mark.parametrize("algo", ["ppo", "mappo"])
def test_bargain_training_reports_self_play_and_baselines(make_cfg, tmp_path, algo):
    cfg = make_cfg([*BARGAIN_TINY, f"algo={algo}", "task.eval_every=1"])
    summary = run(cfg, tmp_path)
    report = summary["bargain"]
    assert set(report["self_play"]) == {"p1", "p2", "welfare", "agreement_rate", "walk_rate"}
    sp = report["self_play"]
    assert sp["welfare"] == pytest.approx(sp["p1"] + sp["p2"])
    assert 0.0 <= sp["welfare"] <= 1.4  # BARGAIN.md: nothing exceeds about 1.35
    assert set(report["vs_baselines"]) == {"random", "always_walk", "greedy", "fair_split"}
    walk = report["vs_baselines"]["always_walk"]
    assert walk["as_p1"]["agreement_rate"] == 0.0 and walk["as_p2"]["agreement_rate"] == 0.0
    history = json.loads((tmp_path / "history.json").read_text())["evaluations"]
    # evaluated after iterations 1 and 2 of 2 (the last one is the final evaluation)
    assert len(history["bargain/self_play/welfare"]) == 2


def test_transformer_policy_trains_on_bargain(make_cfg, tmp_path):
    cfg = make_cfg([*BARGAIN_TINY, "algo=ppo", "algo.network=transformer"])
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed"


def test_crossplay_task_writes_matrix_csv_and_heatmap(make_cfg, tmp_path):
    trained = tmp_path / "trained"
    cfg = make_cfg([*BARGAIN_TINY, "algo=ppo"])
    run(cfg, trained)
    (trained / ".hydra").mkdir()
    OmegaConf.save(cfg, trained / ".hydra" / "config.yaml")
    cp = make_cfg(
        [
            "task=crossplay",
            "env=bargain",
            "hardware=cpu",
            "task.games=300",
            f"task.policies=[greedy,fair_split,{trained}]",
        ]
    )
    out = tmp_path / "cp"
    table = run(cp, out)["crossplay"]
    assert table["policies"] == ["greedy", "fair_split", "trained"]
    on_disk = json.loads((out / "crossplay.json").read_text())
    assert len(on_disk["welfare"]) == 3 and len(on_disk["welfare"][0]) == 3
    rows = list(csv.DictReader((out / "crossplay.csv").open()))
    assert len(rows) == 9
    assert (rows[1]["p1_policy"], rows[1]["p2_policy"]) == ("greedy", "fair_split")
    assert (out / "crossplay.png").is_file()
    # a cell is the match of the row policy as P1 against the column policy as P2
    direct = play_matches(
        {"backend": "torch"},
        make_baseline("fair_split"),
        make_baseline("greedy"),
        300,
        cp.seed,
        device="cpu",
    )
    assert table["p1"][1][0] == pytest.approx(direct["p1"])


def test_crossplay_rejects_unknown_policies(make_cfg, tmp_path):
    cp = make_cfg(["task=crossplay", "env=bargain", "hardware=cpu", "task.policies=[nobody]"])
    with pytest.raises(ConfigError, match="neither a baseline"):
        run(cp, tmp_path)
