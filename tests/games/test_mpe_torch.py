"""The torch MPE backend against mpe2 itself (the reference): same states, same actions, same
observations and rewards within 1e-4 over whole episodes, for every scenario and both action
kinds (dgsolve.games.mpe.compare), plus the Game interface's promises on this backend."""

from __future__ import annotations

import pytest

from dgsolve.games.mpe import SCENARIOS
from dgsolve.games.mpe.compare import agreement

TOL = 1e-4

#: mpe2 keyword arguments other than the defaults, one set per scenario, that the torch twin
#: must also match
VARIANTS: dict[str, list[dict]] = {
    "simple_adversary": [{"N": 3}, {"num_agent_neighbors": 1, "num_landmark_neighbors": 1}],
    "simple_crypto": [{"max_cycles": 7}],
    "simple_push": [{"max_cycles": 7}],
    "simple_reference": [{"local_ratio": 0.2}],
    "simple_speaker_listener": [{"max_cycles": 7}],
    "simple_spread": [
        {"N": 4, "local_ratio": 0.3},
        {"num_agent_neighbors": 1, "num_landmark_neighbors": 2},
        {"terminate_on_success": True},
    ],
    "simple_tag": [
        {"num_good": 2, "num_adversaries": 2, "num_obstacles": 1},
        {"num_agent_neighbors": 2, "num_landmark_neighbors": 1},
    ],
    "simple_world_comm": [{"num_good": 1, "num_adversaries": 2, "num_food": 3, "num_forests": 1}],
}


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_hundred_episodes_match_mpe2(scenario, continuous):
    found = agreement(scenario, episodes=100, seed=1, continuous_actions=continuous)
    assert found.within(TOL), found


@pytest.mark.parametrize(
    "scenario,kwargs",
    [(s, kw) for s, variants in sorted(VARIANTS.items()) for kw in variants],
    ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={x}" for k, x in v.items()),
)
def test_keyword_arguments_match_mpe2(scenario, kwargs):
    found = agreement(scenario, episodes=20, seed=2, **kwargs)
    assert found.within(TOL), found
