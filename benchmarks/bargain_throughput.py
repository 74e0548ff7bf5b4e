"""Throughput of the bargaining game (BARGAIN.md): game steps per second, environment alone.

One game step is one decision in one game. Every game plays uniformly random legal actions,
one draw per decision: in the batched runs the ``random`` baseline draws in O(batch) from the
union of the two players' legal masks, which is the acting player's (the idle one's holds WALK
alone), and both players are handed that action (the idle one's is ignored). Three
implementations of the same rules:

- ``python_loop_steps_per_s``: one game stepped by a plain Python loop, as a per-game environment
  would be written (lists for observations and the mask, precomputed offer decoding, no
  quadratic lookups), returning both players' observations, the legal actions and rewards.
- ``torch_steps_per_s``: the batched torch reference, by batch size (torch's default threads);
  ``torch_steps_per_s_one_thread`` repeats the largest batch on one thread, a figure that holds
  up better when other work shares the machine (oversubscribed threads wait on each other).
- ``triton_steps_per_s``: the Triton kernel, by batch size, only where CUDA is present.

Each figure is the best of a few timed repeats (the machine may be shared). Prints one JSON
object; never asserts on time (DESIGN.md, Testing).
"""

from __future__ import annotations

import json
import random
import time

import torch

from dgsolve.games.bargain import BargainConfig, BargainRules, make_bargain
from dgsolve.games.bargain.baselines import make_baseline

BATCHES = (1024, 16_384, 65_536)
REPEATS = 3


class PythonBargain:
    """One bargaining game, stepped the plain Python way (the per-game baseline). The rule
    constants are copied into plain attributes and the offer decoding and round fractions
    precomputed, as a careful per-game implementation would."""

    def __init__(self, rules: BargainRules, rng: random.Random):
        self.rng = rng
        self.q, self.k, self.max_value = rules.quantities, rules.num_items, rules.max_value
        self.num_offers, self.accept, self.walk = rules.num_offers, rules.accept, rules.walk
        self.last_round, self.discount = rules.rounds - 1, rules.discount
        self.fractions = [rules.round_fraction(t) for t in range(rules.rounds)]
        self.bundles = [rules.decode(a) for a in range(rules.num_offers)]
        no, a = rules.num_offers, rules.num_actions
        self.masks = {  # observation mask blocks and legal action lists, by mask kind
            "propose": ([1.0] * no + [0.0, 1.0], [*range(no), rules.walk]),
            "respond": ([1.0] * a, list(range(a))),
            "final": ([0.0] * no + [1.0, 1.0], [rules.accept, rules.walk]),
        }
        self.idle = [0.0] * a
        self.deal()

    def deal(self) -> None:
        rand, top, q = self.rng.randint, self.max_value, self.q
        self.values = [[rand(1, top) for _ in q] for _ in range(2)]
        self.totals = [sum(v * n for v, n in zip(vs, q)) for vs in self.values]  # noqa: B905
        self.outside = [rand(1, m) for m in self.totals]
        self.offer, self.round, self.player = -1, 0, 0

    def kind(self) -> str:
        if self.offer < 0:
            return "propose"
        return "final" if self.player == 1 and self.round == self.last_round else "respond"

    def observe(self, viewer: int, mask: list[float]) -> list[float]:
        q, top = self.q, self.max_value
        obs = [v / top for v in self.values[viewer]]
        obs.append(self.outside[viewer] / self.totals[viewer])
        if self.offer < 0:
            obs += [-1.0] * self.k
            obs.append(0.0)
        else:
            n = self.bundles[self.offer]
            if viewer == 1:
                obs += [n[i] / q[i] for i in range(self.k)]
            else:
                obs += [(q[i] - n[i]) / q[i] for i in range(self.k)]
            obs.append(1.0)
        obs.append(self.fractions[self.round])
        obs.append(float(self.player))
        return obs + (mask if viewer == self.player else self.idle)

    def step(self, action: int):
        p = self.player
        if 0 <= action < self.num_offers and not (p == 1 and self.round == self.last_round):
            self.offer, self.round, self.player = action, self.round + p, 1 - p
            rewards, done = (0.0, 0.0), False
        else:
            if action == self.accept and self.offer >= 0:
                n = self.bundles[self.offer]
                given = [sum(v * x for v, x in zip(vs, n)) for vs in self.values]  # noqa: B905
                pay = (self.totals[0] - given[0], given[1])
            else:
                pay = self.outside
            scale = self.discount**self.round
            rewards = (pay[0] / self.totals[0] * scale, pay[1] / self.totals[1] * scale)
            done = True
            self.deal()
        mask, legal = self.masks[self.kind()]
        return (self.observe(0, mask), self.observe(1, mask)), rewards, done, legal


def python_loop(steps: int = 200_000) -> float:
    rng = random.Random(0)
    game = PythonBargain(BargainRules(), rng)
    legal = game.masks[game.kind()][1]
    start = time.perf_counter()
    for _ in range(steps):
        _, _, _, legal = game.step(rng.choice(legal))
    return steps / (time.perf_counter() - start)


def batched(backend: str, num_envs: int, device: str) -> float:
    game = make_bargain(BargainConfig(num_envs=num_envs, backend=backend), device)
    policy = make_baseline("random", game.rules, seed=0)
    ts = game.reset(seed=0)
    steps = max(20, 2_000_000 // num_envs)

    def run(n: int):
        nonlocal ts
        p1, p2 = game.agents
        for _ in range(n):
            action = policy.act(ts.obs[p1], ts.legal[p1] | ts.legal[p2])
            ts = game.step({p1: action, p2: action})
        if game.device.type == "cuda":
            torch.cuda.synchronize()

    run(5)  # warm-up: allocator, kernel compilation
    start = time.perf_counter()
    run(steps)
    return num_envs * steps / (time.perf_counter() - start)


def best(fn, *args) -> float:
    return max(fn(*args) for _ in range(REPEATS))


def main() -> None:
    threads = torch.get_num_threads()
    loop = best(python_loop)
    rates = {b: best(batched, "torch", b, "cpu") for b in BATCHES}
    torch.set_num_threads(1)
    one_thread = best(batched, "torch", BATCHES[-1], "cpu")
    torch.set_num_threads(threads)
    result = {
        "python_loop_steps_per_s": round(loop),
        "torch_steps_per_s": {b: round(v) for b, v in rates.items()},
        "torch_threads": threads,
        "torch_steps_per_s_one_thread": {BATCHES[-1]: round(one_thread)},
        "torch_vs_python_loop": {b: round(v / loop, 1) for b, v in rates.items()},
    }
    if torch.cuda.is_available():
        result["triton_steps_per_s"] = {
            b: round(best(batched, "triton", b, "cuda")) for b in BATCHES
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
