"""What could the good agents of simple_adversary get against a trained adversary?

Loads a finished run on ``env=simple_adversary`` (torch backend), keeps its trained adversary
and replaces the good agents by scripted policies, then prints each one's mean good-agent
return over the same episodes, beside the run's own good agents (``trained``) and uniformly
random ones (``random``; the run summary's "random play" has everyone random):

* ``rush``: both good agents head for the goal;
* ``decoy``: ``agent_0`` heads for the goal, ``agent_1`` for the other landmark (fixed roles);
* ``matching``: the agents take the landmarks by the cheaper assignment of the two, which does
  not depend on which landmark is the goal, so their moves tell the adversary nothing (the
  deception of Lowe et al., "Multi-Agent Actor-Critic for Mixed Cooperative-Competitive
  Environments", NeurIPS 2017).

The scripts steer like the learners must: from the positions they observe, without their own
velocity (mpe2 does not show it to good agents), choosing the discrete move along the larger
component of the way to their target, or staying within 0.04 of it. Only a velocity-aware
controller would hold a landmark more tightly. Usage::

    python benchmarks/adversary_scripts.py run=<run dir> [episodes=2000] [seed=7]

Prints one JSON object: ``{"trained": ..., "random": ..., "rush": ..., "decoy": ...,
"matching": ...}`` (mean return of each good agent) and ``adversary`` (the adversary's return
in each of them).
"""

from __future__ import annotations

import json
import sys

import torch
from _options import parse_options  # benchmarks/ is the script's folder

from dgsolve.games.mpe import make_torch
from dgsolve.rundir import load_policies

STAY, LEFT, RIGHT, DOWN, UP = range(5)  # mpe2's discrete moves


def steer(pos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B]`` discrete moves toward ``target`` along the larger component of the way."""
    way = target - pos
    along_x = way[:, 0].abs() >= way[:, 1].abs()
    move = torch.where(
        along_x,
        torch.where(way[:, 0] > 0, RIGHT, LEFT),
        torch.where(way[:, 1] > 0, UP, DOWN),
    )
    return torch.where(way.norm(dim=-1) < 0.04, STAY, move)


def targets(script: str, pos: torch.Tensor, marks: torch.Tensor, goal: torch.Tensor):
    """Each good agent's target landmark ``[B, 2]`` under ``script``."""
    rows = torch.arange(len(goal))
    goal_pos, other_pos = marks[rows, goal], marks[rows, 1 - goal]
    if script == "rush":
        return goal_pos, goal_pos
    if script == "decoy":
        return goal_pos, other_pos
    # matching: agent_0 -> landmark 0 and agent_1 -> landmark 1, or the other way round
    straight = (pos[:, 1] - marks[:, 0]).norm(dim=-1) + (pos[:, 2] - marks[:, 1]).norm(dim=-1)
    crossed = (pos[:, 1] - marks[:, 1]).norm(dim=-1) + (pos[:, 2] - marks[:, 0]).norm(dim=-1)
    keep = (straight <= crossed).unsqueeze(-1)
    return torch.where(keep, marks[:, 0], marks[:, 1]), torch.where(keep, marks[:, 1], marks[:, 0])


def play(joint, script: str, episodes: int, seed: int) -> dict[str, float]:
    """Mean returns over ``episodes`` games, the good agents played by ``script`` (or by the
    run itself: ``trained``; or uniformly at random: ``random``)."""
    game = make_torch("simple_adversary", episodes, auto_reset=False, seed=seed)
    if list(game.agents) != ["adversary_0", "agent_0", "agent_1"]:
        raise SystemExit("adversary_scripts.py needs simple_adversary with N=2")
    gen = torch.Generator().manual_seed(seed)
    ts = game.reset(seed=seed)
    total = {a: torch.zeros(episodes) for a in game.agents}
    marks_at = list(game.scenario._landmarks)
    for _ in range(game.max_cycles):
        actions = joint.act(ts)
        pos, goal = game.state.pos.float(), game.state.extra["goal"]
        if script == "random":
            for a in ("agent_0", "agent_1"):
                actions[a] = torch.randint(5, (episodes,), generator=gen)
        elif script != "trained":
            first, second = targets(script, pos, pos[:, marks_at], goal)
            actions["agent_0"], actions["agent_1"] = (
                steer(pos[:, 1], first),
                steer(pos[:, 2], second),
            )
        ts = game.step(actions)
        for a in game.agents:
            total[a] += ts.reward[a]
    return {a: round(float(v.mean()), 3) for a, v in total.items()}


def main(argv: list[str]) -> None:
    opts = parse_options(argv, {"run": "", "episodes": "2000", "seed": "7"})
    if not opts["run"]:
        raise SystemExit("usage: python benchmarks/adversary_scripts.py run=<run dir> ...")
    episodes, seed = int(opts["episodes"]), int(opts["seed"])
    joint, cfg = load_policies(opts["run"], num_envs=episodes)
    if cfg.env.name != "simple_adversary" or cfg.env.get("continuous_actions"):
        raise SystemExit("adversary_scripts.py needs a run on env=simple_adversary (discrete)")
    out, adversary = {}, {}
    for script in ("trained", "random", "rush", "decoy", "matching"):
        returns = play(joint, script, episodes, seed)
        out[script], adversary[script] = returns["agent_0"], returns["adversary_0"]
    print(json.dumps({**out, "adversary": adversary}))


if __name__ == "__main__":
    main(sys.argv[1:])
