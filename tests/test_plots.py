"""What a user reads off a run's pictures: one colour per agent in every plot, titles, visible
points and overlapping curves, and a rollout GIF that names the agents and counts the steps."""

from __future__ import annotations

import functools
from itertools import pairwise

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from PIL import Image

from dgsolve.artifacts import History, RunArtifacts, losses_figure, returns_figure
from dgsolve.plots import PALETTE, agent_styles, label_frames, mpe_screen_positions
from dgsolve.tasks.crossplay import crossplay_figure

PNG = b"\x89PNG\r\n\x1a\n"


def tiny_history(points: int, agents=("p1", "p2"), same: bool = False) -> History:
    history = History(agents)
    for t in range(points):
        r = float(np.sin(t))
        history.add_episode(10 * t, {a: r if same else r * (i + 1) for i, a in enumerate(agents)})
        for i, a in enumerate(agents):
            history.add_update(a, 10 * t, {"policy_loss": r, "value_loss": i, "entropy": 0.5})
    return history


def lines(fig) -> dict[str, object]:
    """The labelled curves of a figure, by label (a learner appears once per panel)."""
    return {ln.get_label(): ln for ax in fig.axes for ln in ax.get_lines()}


def crossplay_table() -> dict:
    return {
        "policies": ["greedy", "fair_split"],
        "welfare": [[0.4, 0.9], [0.7, 1.0]],
        "meta": {
            "support": {"p1": ["fair_split"], "p2": ["greedy", "fair_split"]},
            "nash": {"p1": [0.0, 1.0], "p2": [0.5, 0.5]},
            "welfare": 0.85,
        },
    }


def test_agent_i_gets_colour_i_and_a_learner_that_of_its_agent():
    styles = agent_styles(("adversary_0", "agent_0", "agent_1"), ["agent_0+agent_1", "psro"])
    assert [styles[a].colour for a in ("adversary_0", "agent_0", "agent_1")] == list(PALETTE[:3])
    assert styles["agent_0+agent_1"] == styles["agent_0"]  # a shared learner: its first agent
    assert styles["psro"].colour == PALETTE[3]  # a learner of no agent: the next free colour
    # the names passed along never move an agent's colour
    assert agent_styles(("a", "b"), ["x", "b"])["b"] == agent_styles(("a", "b"))["b"]
    # past the palette's eight colours, the line style tells agent 8 from agent 0
    many = agent_styles([str(i) for i in range(9)])
    assert many["8"].colour == many["0"].colour and many["8"].linestyle != many["0"].linestyle


def test_an_agent_has_one_colour_in_every_plot_of_a_run():
    history = tiny_history(5)
    returns = lines(returns_figure(history))
    losses = lines(losses_figure(history))
    cross = crossplay_figure(crossplay_table())
    rows_ax, cols_ax = cross.axes[1], cross.axes[2]  # P1's Nash bars by the rows, P2's below
    for i, seat in enumerate(("p1", "p2")):
        assert returns[seat].get_color() == losses[seat].get_color() == PALETTE[i]
        bars = (rows_ax if seat == "p1" else cols_ax).patches
        assert {to_hex(bar.get_facecolor()) for bar in bars} == {PALETTE[i].lower()}
    assert returns["p1"].get_color() != returns["p2"].get_color()


def test_every_plot_has_a_title_naming_the_run():
    history = tiny_history(3)
    returns = returns_figure(history, algo="ppo", env="simple_adversary")
    assert returns.axes[0].get_title() == "episodic return per agent — ppo on simple_adversary"
    losses = losses_figure(history, algo="ppo", env="simple_adversary")
    assert "ppo on simple_adversary" in losses.get_suptitle()
    assert [ax.get_title() for ax in losses.axes] == ["policy_loss", "value_loss", "entropy"]
    # callers that pass nothing still get titles
    assert returns_figure(history).axes[0].get_title() == "episodic return per agent"
    assert losses_figure(history).get_suptitle() == "training curves per learner"
    assert "cross-play welfare" in crossplay_figure(crossplay_table()).get_suptitle()


@pytest.mark.parametrize("points, marked", [(1, True), (2, True), (50, True), (120, False)])
def test_markers_show_curves_of_few_points(points, marked):
    history = tiny_history(points)
    for fig in (returns_figure(history), losses_figure(history)):
        for line in lines(fig).values():
            assert (line.get_marker() not in (None, "None", "")) == marked


def test_identical_curves_of_two_agents_both_show():
    ret = lines(returns_figure(tiny_history(5, agents=("a", "b"), same=True)))
    a, b = ret["a"], ret["b"]
    assert np.array_equal(a.get_ydata(), b.get_ydata())
    assert a.get_linestyle() != b.get_linestyle() and a.get_marker() != b.get_marker()
    # the later one is drawn on top, thinner, its markers hollow so the earlier show through
    assert b.get_zorder() > a.get_zorder() and b.get_linewidth() < a.get_linewidth()
    assert b.get_markerfacecolor() == "none" and a.get_alpha() < 1


def test_write_plots_writes_both_pngs_with_and_without_run_names(tmp_path):
    for kwargs in ({}, {"algo": "cfr", "env": "kuhn_poker"}):
        art = RunArtifacts(tmp_path / str(len(kwargs)), ("p1", "p2"), tensorboard=False)
        art.history = tiny_history(2)
        art.write_plots("CFR+ iterations", **kwargs)
        for name in ("returns.png", "losses.png"):
            assert (art.dir / "plots" / name).read_bytes()[:8] == PNG
    empty = RunArtifacts(tmp_path / "empty", ("p1", "p2"), tensorboard=False)
    empty.write_plots()  # a solver that logs nothing still gets both files
    assert (empty.dir / "plots" / "losses.png").read_bytes()[:8] == PNG


# ---------------------------------------------------------------------- rollout.gif
CYCLES = 3


def moves(t: int) -> int:
    return t % 4 + 1  # the same fixed walk in both episodes below, so the agents move


def unlabelled_episode():
    """simple_adversary rendered by mpe2 alone, and where it drew each agent."""
    from mpe2 import simple_adversary_v3

    env = simple_adversary_v3.parallel_env(render_mode="rgb_array", max_cycles=CYCLES)
    env.reset(seed=0)  # the seed PettingZooGame.reset(0) gives its first copy
    agents = tuple(env.possible_agents)
    frames, where = [env.render()], [mpe_screen_positions(env, agents)]
    for t in range(CYCLES):
        env.step({a: moves(t) for a in env.agents})
        frames.append(env.render())
        where.append(mpe_screen_positions(env, agents))
    env.close()
    return agents, frames, where


def labelled_episode():
    from mpe2 import simple_adversary_v3

    from dgsolve.games.pettingzoo import PettingZooGame

    factory = functools.partial(simple_adversary_v3.parallel_env, max_cycles=CYCLES)
    game = PettingZooGame(factory, num_envs=1, can_render=True)
    steps = iter(range(100))

    def policy(ts):
        t = next(steps)
        return {a: torch.tensor([moves(t)]) for a in game.agents}

    frames = game.render_episode(policy, max_steps=10, seed=0)
    game.close()
    return frames


def colour_pixels(frame: np.ndarray, rgb, box) -> int:
    x0, y0, x1, y1 = (max(int(v), 0) for v in box)
    return int(np.all(frame[y0:y1, x0:x1] == rgb, axis=-1).sum())


def test_rollout_frames_name_each_agent_beside_it_and_show_the_step(tmp_path):
    agents, raw, where = unlabelled_episode()
    frames = labelled_episode()
    assert len(frames) == len(raw) == CYCLES + 1
    assert {f.shape for f in frames} == {raw[0].shape}
    styles = agent_styles(agents)
    for k, (frame, plain) in enumerate(zip(frames, raw, strict=True)):
        for a in agents:
            x, y, r = where[k][a]
            beside = (x - r - 220, y - 20, x + r + 220, y + 20)
            # the name is written in the agent's plot colour right next to it, and mpe2 alone
            # draws nothing of that colour there
            assert colour_pixels(frame, styles[a].rgb, beside) > 20, (k, a)
            assert colour_pixels(plain, styles[a].rgb, beside) == 0
    corner = (slice(0, 40), slice(0, 140))
    black = [int(np.all(f[corner] < 60, axis=-1).sum()) for f in frames]
    assert min(black) > 20 and all(np.all(p[corner] == 255) for p in raw)
    # "step 0/3", "step 1/3", ...: the corner differs from one frame to the next
    assert all(not np.array_equal(f[corner], g[corner]) for f, g in pairwise(frames))
    art = RunArtifacts(tmp_path, agents, tensorboard=False)
    art.write_gif(frames)
    with Image.open(tmp_path / "rollout.gif") as gif:
        assert gif.n_frames == len(frames) and gif.size == (raw[0].shape[1], raw[0].shape[0])


def test_frames_without_agent_positions_get_a_legend_strip():
    frames = [np.full((2, 2, 3), 9 * k, np.uint8) for k in range(3)]
    out = label_frames(frames, ("a", "b"))
    assert len({f.shape for f in out}) == 1 and out[0].shape[0] > 2 and out[0].shape[1] > 2
    styles = agent_styles(("a", "b"))
    whole = (0, 0, out[0].shape[1], out[0].shape[0])
    for a in ("a", "b"):
        assert colour_pixels(out[0], styles[a].rgb, whole) > 20  # a swatch and the name
    h, w = out[1].shape[:2]
    assert np.all(out[1][h - 2 :, (w - 2) // 2 : (w - 2) // 2 + 2] == 9)  # the frame, below
    assert not np.array_equal(out[0][:20], out[1][:20])  # the step counter moved on
