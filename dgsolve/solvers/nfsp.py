"""Neural Fictitious Self-Play (``algo=nfsp``) on discrete turn-based games.

Heinrich & Silver, "Deep Reinforcement Learning from Self-Play in Imperfect-Information Games"
(2016). Every player ``i`` keeps two networks and two memories:

- a best response ``Q_i`` learned by DQN (Mnih et al. 2015) from a circular replay buffer
  ``M_RL`` of its own transitions, with a target network copied every ``target_update`` updates,
  ε-greedy exploration and the squared TD error (not DQN's Huber loss: with stochastic returns
  of magnitude above its δ = 1, such as poker's ±2, the Huber minimiser is not the mean return,
  and the biased values made Kuhn poker's best responses wrong);
- an average policy ``Π_i`` learned by supervised classification (cross-entropy on masked
  logits) from a reservoir buffer ``M_SL`` of the (information state, legal mask, action) of
  its best-response play, which keeps a uniform sample of everything it was offered.

In each game copy and episode, each player plays ε-greedy ``Q_i`` with probability ``η``
(``anticipatory``, the anticipatory parameter) and ``Π_i`` otherwise. The average policies
``Π_i`` are what converges to a Nash equilibrium in two-player zero-sum games (fictitious
play); they are what :meth:`NFSPSolver.policies` plays, what ``eq/`` measures and what
``policy.pt`` holds.

A player's transition runs from one of its decisions to its next one: the reward is summed over
the environment steps in between (the other players' moves and chance), the next observation and
legal mask are those of its next decision, and ``done`` marks the episode's end.

Variant: the algorithm of the paper's Algorithm 1 with OpenSpiel's choices
(``open_spiel/python/pytorch/nfsp.py``: η = 0.1, ε linearly from 0.06 to 0.001, plain DQN
targets with the squared error, reservoir sampling, learning every 64 steps with batches of 128,
target network every 300 updates), but Adam at lr 0.001 instead of SGD at 0.01 for both
networks, and ReLU networks of width 128 (OpenSpiel's).

Measured on Kuhn poker (one thread): ``dgsolve env=openspiel algo=nfsp`` ends at NashConv 0.282
(seed 0) and 0.276 (seed 1); longer runs do not improve on that (0.22–0.32 over 300 s). The
average policy stops improving because player 0's DQN best response is off by 0.02–0.15
against the average opponent (its values at rarely visited states, e.g. holding the king after
pass-bet, stay wrong, and the greedy response with them), and fictitious play with ε-best
responses only reaches an O(ε)-equilibrium. The squared error and ReLU (in place of Huber and
tanh) stopped the drift upwards (to 0.40) of the first version. Tried without success: 4-8x
more updates, a replay buffer of 30k, a constant ε, plain SGD at lr 0.01
(``algo.optimizer=sgd``, OpenSpiel's), wider batches, and (300 s, seed 0, final NashConv,
against 0.302 without any of them) LayerNorm before the outputs (0.266), the greedy action
instead of the ε-greedy one in the reservoir (0.315), and that with Double DQN targets (van
Hasselt et al. 2016; 0.294). Hence the short default budget in ``conf/algo/nfsp.yaml``; the
issue's target (exploitability 0.08, i.e. NashConv 0.16, within 300 s) is not reached.

``global_step`` counts environment steps summed over ``env.num_envs`` copies; one
:meth:`NFSPSolver.step` plays ``steps_per_iteration`` of them (the unit of evaluation and
checkpoints) and starts from fresh games, so that a checkpoint needs no game state (OpenSpiel
states cannot be saved) and a resumed run continues exactly; transitions still unfinished when a
step ends are dropped.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from dgsolve.config import Optimizer
from dgsolve.errors import CapabilityError, ConfigError, RunDirError, TrainingDiverged
from dgsolve.games.base import Game, TimeStep
from dgsolve.hierarchy import Hierarchy
from dgsolve.nets import ActionNet, masked_logits
from dgsolve.policy import JointPolicy, NetPolicy

# --------------------------------------------------------------------------- networks
# Both networks are :class:`~dgsolve.nets.ActionNet` (ReLU, PyTorch's default initialisation, as
# DQN and OpenSpiel's NFSP use). With the tanh torso of dgsolve's PPO networks, player 0's Kuhn
# best response drifted further from exact over training (0.05 → 0.2) and the average policy's
# NashConv rose with it (0.27 → 0.40 by 300k steps); with ReLU the gaps stayed at 0.02–0.08 and
# NashConv at 0.26–0.28 over 300k.

#: the networks' kind, recorded in ``policy.pt`` and checkpoints: earlier versions used tanh
NETWORK = "relu"


# --------------------------------------------------------------------------- memories
class ReplayBuffer:
    """Circular buffer of one player's transitions ``(obs, action, reward, next_obs,
    next_legal, done)``: once full, the oldest are overwritten."""

    FIELDS = ("obs", "action", "reward", "next_obs", "next_legal", "done")

    def __init__(self, capacity: int, obs_dim: int, num_actions: int, device: torch.device):
        self.capacity, self.pos, self.size = capacity, 0, 0
        self.data = {
            "obs": torch.zeros(capacity, obs_dim, device=device),
            "action": torch.zeros(capacity, dtype=torch.long, device=device),
            "reward": torch.zeros(capacity, device=device),
            "next_obs": torch.zeros(capacity, obs_dim, device=device),
            "next_legal": torch.zeros(capacity, num_actions, dtype=torch.bool, device=device),
            "done": torch.zeros(capacity, dtype=torch.bool, device=device),
        }

    def __len__(self) -> int:
        return self.size

    def add(self, **batch: torch.Tensor) -> None:
        """Append a batch of ``k`` transitions (fields as keywords, leading dimension ``k``)."""
        k = len(batch["action"])
        if k == 0:
            return
        if k > self.capacity:  # only the newest fit
            batch = {name: x[-self.capacity :] for name, x in batch.items()}
            k = self.capacity
        slots = (self.pos + torch.arange(k, device=batch["action"].device)) % self.capacity
        for name in self.FIELDS:
            self.data[name][slots] = batch[name]
        self.pos = (self.pos + k) % self.capacity
        self.size = min(self.size + k, self.capacity)

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.size, (n,), generator=gen, device=gen.device)
        return {name: x[idx.to(x.device)] for name, x in self.data.items()}

    def state_dict(self) -> dict:
        """The stored transitions in slot order (only the filled slots), and the write position."""
        return {
            "pos": self.pos,
            "size": self.size,
            "data": {n: x[: self.size].clone() for n, x in self.data.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise RunDirError(
                f"the replay buffer holds {size} items; this run keeps {self.capacity}"
            )
        for name in self.FIELDS:
            self.data[name][:size] = state["data"][name]
        self.pos, self.size = int(state["pos"]), size


class ReservoirBuffer:
    """Reservoir sampling (Vitter 1985, Algorithm R): after ``t`` offers, each offered item is
    stored with probability ``capacity / t``, so the buffer is a uniform sample of all of them."""

    FIELDS = ("obs", "legal", "action")

    def __init__(self, capacity: int, obs_dim: int, num_actions: int, device: torch.device):
        self.capacity, self.seen = capacity, 0
        self.data = {
            "obs": torch.zeros(capacity, obs_dim, device=device),
            "legal": torch.zeros(capacity, num_actions, dtype=torch.bool, device=device),
            "action": torch.zeros(capacity, dtype=torch.long, device=device),
        }

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, gen: torch.Generator, **batch: torch.Tensor) -> None:
        """Offer a batch of ``k`` items, in order: item ``j`` is offer number ``seen + j``."""
        k = len(batch["action"])
        if k == 0:
            return
        device = batch["action"].device
        t = self.seen + torch.arange(k, device=gen.device)  # 0-based offer numbers
        # offer t goes to slot t while there is room, else to a uniform slot in [0, t], kept
        # only if that slot exists
        draw = (
            torch.rand(k, generator=gen, device=gen.device, dtype=torch.float64) * (t + 1)
        ).long()
        slot = torch.where(t < self.capacity, t, draw)
        keep = slot < self.capacity
        slot, index = slot[keep], torch.nonzero(keep).flatten()
        # a later offer overwrites an earlier one in the same slot: keep the last per slot
        order = torch.argsort(slot * k + index)
        slot, index = slot[order], index[order]
        last = torch.ones_like(slot, dtype=torch.bool)
        last[:-1] = slot[1:] != slot[:-1]
        slot, index = slot[last].to(device), index[last].to(device)
        for name in self.FIELDS:
            self.data[name][slot] = batch[name][index]
        self.seen += k

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(len(self), (n,), generator=gen, device=gen.device)
        return {name: x[idx.to(x.device)] for name, x in self.data.items()}

    def state_dict(self) -> dict:
        return {
            "seen": self.seen,
            "data": {n: x[: len(self)].clone() for n, x in self.data.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        seen = int(state["seen"])
        size = min(seen, self.capacity)
        if len(state["data"]["action"]) != size:
            raise RunDirError(
                f"the reservoir holds {len(state['data']['action'])} items; this run keeps "
                f"{self.capacity}"
            )
        for name in self.FIELDS:
            self.data[name][:size] = state["data"][name]
        self.seen = seen


# --------------------------------------------------------------------------- one player
#: ``algo.optimizer`` of both networks: Adam (the default) or plain SGD (OpenSpiel's choice)
OPTIMISERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


class Player:
    """One player's networks, optimisers and memories."""

    def __init__(self, cfg, obs_dim: int, num_actions: int, device: torch.device):
        hidden = list(cfg.hidden_sizes)
        self.q = ActionNet(obs_dim, num_actions, hidden).to(device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.avg = ActionNet(obs_dim, num_actions, hidden).to(device)
        # runs written before algo.optimizer existed trained with Adam
        optimiser = OPTIMISERS[Optimizer(cfg.get("optimizer", "adam")).value]
        self.q_opt = optimiser(self.q.parameters(), lr=cfg.rl_lr)
        self.avg_opt = optimiser(self.avg.parameters(), lr=cfg.sl_lr)
        self.replay = ReplayBuffer(int(cfg.replay_size), obs_dim, num_actions, device)
        self.reservoir = ReservoirBuffer(int(cfg.reservoir_size), obs_dim, num_actions, device)
        self.updates = 0

    def state_dict(self) -> dict:
        return {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "avg": self.avg.state_dict(),
            "q_opt": self.q_opt.state_dict(),
            "avg_opt": self.avg_opt.state_dict(),
            "replay": self.replay.state_dict(),
            "reservoir": self.reservoir.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.avg.load_state_dict(state["avg"])
        self.q_opt.load_state_dict(state["q_opt"])
        self.avg_opt.load_state_dict(state["avg_opt"])
        self.replay.load_state_dict(state["replay"])
        self.reservoir.load_state_dict(state["reservoir"])
        self.updates = int(state["updates"])


def epsilon_at(cfg, global_step: int) -> float:
    """ε decays linearly from ``epsilon_start`` to ``epsilon_end`` over the whole budget."""
    frac = min(1.0, global_step / max(1, int(cfg.total_timesteps)))
    return float(cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start))


# --------------------------------------------------------------------------- the solver
class NFSPSolver:
    """``algo=nfsp``: ``cfg.total_timesteps`` environment steps in steps of
    ``cfg.steps_per_iteration``; the policies play every player's average policy."""

    def __init__(self, cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
        continuous = [a for a in game.agents if not game.spec(a).discrete]
        if continuous:
            raise CapabilityError(
                f"algo=nfsp needs discrete actions; {', '.join(continuous)} of "
                f"{type(game).__name__} act continuously (use algo=ppo)"
            )
        if not hierarchy.is_simultaneous:
            raise ConfigError(
                "algo=nfsp plays the game in its own turn order; use hierarchy=simultaneous"
            )
        self.cfg, self.game, self.hierarchy, self.device = cfg, game, hierarchy, device
        self.seed = int(seed)
        self.agents = tuple(game.agents)
        self.specs = {a: game.spec(a) for a in self.agents}
        self.num_envs = int(game.num_envs)
        self.batched_steps = max(1, math.ceil(int(cfg.steps_per_iteration) / self.num_envs))
        per_iteration = self.batched_steps * self.num_envs
        self.num_iterations = max(1, math.ceil(int(cfg.total_timesteps) / per_iteration))
        self.iteration = 0
        self.global_step = 0
        self.since_update = 0  # env steps since the last learning update
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(self.seed)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            self.players = {
                a: Player(cfg, self.specs[a].obs_dim, self.specs[a].num_actions, device)
                for a in self.agents
            }
        self.policy_of = {a: NetPolicy(self.players[a].avg, self.specs[a]) for a in self.agents}
        self.joint = JointPolicy(self.policy_of, hierarchy, self.specs)

    # ------------------------------------------------------------------ public API
    @property
    def done(self) -> bool:
        return self.iteration >= self.num_iterations

    def policies(self) -> dict[str, NetPolicy]:
        """The average policies."""
        return dict(self.policy_of)

    def joint_policy(self) -> JointPolicy:
        return self.joint

    def step(self) -> dict:
        """``steps_per_iteration`` environment steps from fresh games, learning every
        ``train_every`` of them."""
        self.iteration += 1
        ts = self.game.reset(seed=self.seed * 7919 + self.iteration)
        B, dev = self.num_envs, self.device
        # per copy: who plays its best response this episode; each player's open transition
        best = {a: self._draw_best(B) for a in self.agents}
        pending = {a: torch.zeros(B, dtype=torch.bool, device=dev) for a in self.agents}
        p_obs = {a: torch.zeros_like(ts.obs[a], device=dev) for a in self.agents}
        p_action = {a: torch.zeros(B, dtype=torch.long, device=dev) for a in self.agents}
        p_reward = {a: torch.zeros(B, device=dev) for a in self.agents}
        ep_return = {a: torch.zeros(B, device=dev) for a in self.agents}
        episodes: list[tuple[int, dict[str, float]]] = []
        losses: dict[str, dict[str, list[float]]] = {a: {} for a in self.agents}

        for _ in range(self.batched_steps):
            obs = {a: ts.obs[a].to(dev) for a in self.agents}
            legal = {a: ts.legal[a].to(dev) for a in self.agents}
            acting = {a: ts.acting[a].to(dev) for a in self.agents}
            actions = {}
            for a in self.agents:
                # a player deciding again closes its open transition (not done)
                close = acting[a] & pending[a]
                self.players[a].replay.add(
                    obs=p_obs[a][close],
                    action=p_action[a][close],
                    reward=p_reward[a][close],
                    next_obs=obs[a][close],
                    next_legal=legal[a][close],
                    done=torch.zeros(int(close.sum()), dtype=torch.bool, device=dev),
                )
                # ALGO LOGIC: η-mixture of the ε-greedy best response and the average policy
                actions[a] = self._act(a, obs[a], legal[a], best[a])
                br = acting[a] & best[a]
                self.players[a].reservoir.add(
                    self.gen, obs=obs[a][br], legal=legal[a][br], action=actions[a][br]
                )
                p_obs[a] = torch.where(acting[a][:, None], obs[a], p_obs[a])
                p_action[a] = torch.where(acting[a], actions[a], p_action[a])
                p_reward[a] = torch.where(acting[a], 0.0, p_reward[a])
                pending[a] = pending[a] | acting[a]

            ts = self.game.step(actions)
            self._check_rewards(ts)
            self.global_step += B
            done = ts.done.to(dev)
            for a in self.agents:
                r = ts.reward[a].to(dev)
                p_reward[a] = p_reward[a] + r
                ep_return[a] = ep_return[a] + r
                # the episode's end closes every open transition
                close = done & pending[a]
                next_obs = ts.final_obs[a].to(dev) if ts.final_obs else ts.obs[a].to(dev)
                self.players[a].replay.add(
                    obs=p_obs[a][close],
                    action=p_action[a][close],
                    reward=p_reward[a][close],
                    next_obs=next_obs[close],
                    next_legal=torch.ones_like(legal[a][close]),
                    done=ts.terminated_for(a).to(dev)[close],
                )
                pending[a] = pending[a] & ~done
            if done.any():
                for i in torch.nonzero(done).flatten().tolist():
                    episodes.append(
                        (self.global_step, {a: float(r[i]) for a, r in ep_return.items()})
                    )
                for a in self.agents:
                    ep_return[a] = torch.where(done, 0.0, ep_return[a])
                    best[a] = torch.where(done, self._draw_best(B), best[a])

            # LEARNING: every train_every environment steps, one update of every network
            self.since_update += B
            while self.since_update >= self.cfg.train_every:
                self.since_update -= self.cfg.train_every
                for a in self.agents:
                    for name, value in self._learn(a).items():
                        losses[a].setdefault(name, []).append(value)

        mean = {
            a: {name: sum(vs) / len(vs) for name, vs in named.items()}
            for a, named in losses.items()
            if named
        }
        for a in mean:
            mean[a]["epsilon"] = epsilon_at(self.cfg, self.global_step)
            mean[a]["reservoir"] = float(len(self.players[a].reservoir))
        return {"episodes": episodes, "losses": mean}

    def summary(self) -> dict:
        """What summary.json records of the learner: each player's memories and updates."""
        return {
            "nfsp": {
                a: {
                    "updates": p.updates,
                    "replay": len(p.replay),
                    "reservoir": len(p.reservoir),
                    "reservoir_offers": p.reservoir.seen,
                }
                for a, p in self.players.items()
            }
        }

    def state_dict(self) -> dict:
        """Networks, optimisers, both memories of every player, counters and the generator
        (tensors and plain values; ``torch.load(weights_only=True)`` reads it)."""
        return {
            "iteration": self.iteration,
            "global_step": self.global_step,
            "since_update": self.since_update,
            "gen": self.gen.get_state(),
            "players": {a: p.state_dict() for a, p in self.players.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        for a, p in self.players.items():
            p.load_state_dict(state["players"][a])
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])
        self.since_update = int(state["since_update"])
        self.gen.set_state(state["gen"])

    def policy_state(self) -> dict:
        """What ``policy.pt`` holds: the average policy networks."""
        return {
            "solver": "nfsp",
            "network": NETWORK,
            "hidden_sizes": list(self.cfg.hidden_sizes),
            "avg": {a: p.avg.state_dict() for a, p in self.players.items()},
        }

    def load_policy_state(self, state: dict) -> None:
        if state.get("solver") != "nfsp":
            raise RunDirError("policy.pt was not written by algo=nfsp")
        if state.get("network") != NETWORK:
            raise RunDirError(
                "policy.pt holds the tanh networks of an earlier algo=nfsp; this version plays "
                "ReLU networks (train the run again)"
            )
        for a, p in self.players.items():
            p.avg.load_state_dict(state["avg"][a])

    # ------------------------------------------------------------------ internals
    def _draw_best(self, n: int) -> torch.Tensor:
        u = torch.rand(n, generator=self.gen, device=self.gen.device).to(self.device)
        return u < self.cfg.anticipatory

    @torch.no_grad()
    def _act(self, agent: str, obs: torch.Tensor, legal: torch.Tensor, best: torch.Tensor):
        """ε-greedy on ``Q`` where ``best``, a sample of the average policy elsewhere."""
        p, gen, n = self.players[agent], self.gen, len(obs)
        eps = epsilon_at(self.cfg, self.global_step)
        greedy = masked_logits(p.q(obs), legal).argmax(-1)
        uniform = torch.multinomial(legal.float().to(gen.device), 1, generator=gen).flatten()
        explore = torch.rand(n, generator=gen, device=gen.device) < eps
        br = torch.where(explore.to(obs.device), uniform.to(obs.device), greedy)
        probs = torch.softmax(masked_logits(p.avg(obs), legal), -1) * legal
        avg = torch.multinomial(probs.to(gen.device), 1, generator=gen).flatten()
        return torch.where(best, br, avg.to(obs.device))

    def _learn(self, agent: str) -> dict[str, float]:
        """One DQN update of ``Q`` and one supervised update of the average policy, each once
        its memory holds a batch."""
        p, cfg, out = self.players[agent], self.cfg, {}
        n = int(cfg.batch_size)
        if len(p.replay) >= n:
            b = p.replay.sample(n, self.gen)
            with torch.no_grad():
                next_q = masked_logits(p.q_target(b["next_obs"]), b["next_legal"]).max(-1).values
                target = b["reward"] + torch.where(b["done"], 0.0, next_q)
            q = p.q(b["obs"]).gather(-1, b["action"][:, None]).squeeze(-1)
            loss = F.mse_loss(q, target)
            self._check_loss(agent, "rl_loss", loss)
            p.q_opt.zero_grad()
            loss.backward()
            p.q_opt.step()
            p.updates += 1
            if p.updates % int(cfg.target_update) == 0:
                p.q_target.load_state_dict(p.q.state_dict())
            out["rl_loss"] = float(loss.detach())
        if len(p.reservoir) >= n:
            b = p.reservoir.sample(n, self.gen)
            logits = masked_logits(p.avg(b["obs"]), b["legal"])
            loss = F.cross_entropy(logits, b["action"])
            self._check_loss(agent, "sl_loss", loss)
            p.avg_opt.zero_grad()
            loss.backward()
            p.avg_opt.step()
            out["sl_loss"] = float(loss.detach())
        return out

    def _check_loss(self, agent: str, name: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            err = TrainingDiverged(
                f"{agent}'s {name} is not finite at env step {self.global_step:,}; lower "
                "algo.rl_lr / algo.sl_lr"
            )
            err.source = "learner"
            raise err

    def _check_rewards(self, ts: TimeStep) -> None:
        bad = [a for a in self.agents if not torch.isfinite(ts.reward[a]).all()]
        if bad:
            err = TrainingDiverged(
                f"the game returned a non-finite reward for {', '.join(bad)} at env step "
                f"{self.global_step:,}"
            )
            err.source = "game"
            raise err
