"""Ex²PSRO (``algo=ex2psro``): PSRO whose best responses explore toward high-welfare behaviour.

"Explicit Exploration for High-Welfare Equilibria in Game-Theoretic Multiagent Reinforcement
Learning" (OpenReview, 2025) keeps PSRO's loop (:mod:`dgsolve.solvers.psro`: populations, their
empirical game, a meta-strategy ``σ``, one best response per player a PSRO iteration) and changes
two of its parts so that the equilibrium it ends in is a high-welfare one:

1. **An exploration policy per player, imitating the population's highest-welfare behaviour.**
   The ``algo.exploration_top_k`` joint profiles of the empirical game with the highest welfare
   (``algo.welfare_fn``) are played, each game copy drawing one of them per episode, for
   ``algo.imitation_steps`` environment steps; the episodes whose own welfare is in the top
   ``algo.imitation_top_fraction`` of those finished are kept, and each player's decisions in
   them are imitated by behavioural cloning (``algo.imitation_epochs`` passes of cross-entropy,
   Adam at ``algo.imitation_lr``). Keeping only the best episodes is percentile behavioural
   cloning (the "%BC" of Chen et al., "Decision Transformer", NeurIPS 2021; Oh et al.,
   "Self-Imitation Learning", ICML 2018): a profile of the population that reaches a
   high-welfare outcome only sometimes (the uniform policy's rare agreements in bargaining, its
   quarter of (stag, stag) in the stag hunt) is imitated where it does, not on average.
2. **A best response regularised toward it.** Each response's PPO learner starts from the
   exploration policy and is trained against ``σ_{-i}`` (as PSRO's PPO oracle,
   :class:`~dgsolve.solvers.psro.PPOPSRO`) with the penalty ``β · KL(π ‖ π_explore)``
   (:class:`~dgsolve.solvers.ppo.KLAnchor`), ``β = algo.kl_coef``; with ``algo.adaptive_kl`` it
   follows PPO's adaptive-penalty rule toward a divergence of ``algo.kl_target``. The learner
   maximises ``E[R] − β KL``, whose optimum is ``π ∝ π_explore · exp(Q / β)``: where the return
   leaves a choice (actions of equal or nearly equal value, states the opponents rarely lead to),
   the high-welfare behaviour stays; where it does not, the best response wins.
3. **Equilibrium selection biased to welfare.** With ``algo.meta_solver=nash`` the meta-strategy
   is the highest-welfare equilibrium of the empirical game by ``algo.welfare_fn``
   (:func:`~dgsolve.eval.meta_game.nash` with ``select="welfare"``: among all extreme
   equilibria of a small game, else among those Lemke–Howson reaches from every label); other
   meta-solvers have no choice to bias.

Welfare functions (:data:`~dgsolve.eval.meta_game.WELFARE_FNS`): ``utilitarian`` (the payoffs'
sum), ``nash`` (the product of gains over each player's worst payoff in the game or the episodes
at hand) and ``egalitarian`` (the worst-off player's payoff).

Which variant and why: the paper ranks the population by welfare and imitates it; here the ranked
things are joint *profiles* (a policy's welfare depends on whom it plays), and only their best
episodes are imitated, so the method starts from the uniform population that PSRO starts from and
still finds high-welfare behaviour in it. The responses warm-start from the exploration policy:
anchored and initialised at the same point, a response begins with zero divergence and leaves the
exploration policy only where its return says so. ``policy.pt`` has PSRO's format; the summary
adds ``ex2psro`` (settings and the last exploration: its profiles, the welfare threshold, the
decisions imitated and the final penalty per player).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from dgsolve.errors import ConfigError
from dgsolve.eval import meta_game
from dgsolve.games.base import Game
from dgsolve.hierarchy import Hierarchy
from dgsolve.solvers.psro import PPOPSRO

#: the largest minibatch of the behavioural-cloning passes
IMITATION_BATCH = 256
#: an exploration policy anchors a response only where its cloning loss is at least this share
#: below uniform play's on the same decisions: a clone no better than uniform play holds no
#: high-welfare behaviour, and a KL penalty toward it is an entropy bonus (measured on
#: bargaining: P1's first offers in the best uniform-play episodes clone to 4.38 nats against
#: uniform play's 4.38, and anchoring to them kept P1 offering at random)
MIN_IMITATION_GAIN = 0.05


class Ex2PSRO(PPOPSRO):
    """``algo=ex2psro``: PSRO with the PPO oracle, exploration policies imitating the
    population's highest-welfare play, KL-anchored responses and welfare-biased selection."""

    def __init__(self, cfg, game: Game, hierarchy: Hierarchy, device: torch.device, seed: int):
        if str(getattr(cfg.oracle, "value", cfg.oracle)) != "ppo":
            raise ConfigError(
                "algo=ex2psro learns its regularised best responses with PPO; set "
                "algo.oracle=ppo (the exact oracle is algo=psro's)"
            )
        self.welfare_fn = str(getattr(cfg.welfare_fn, "value", cfg.welfare_fn))
        self.top_k = int(cfg.exploration_top_k)
        self.top_fraction = float(cfg.imitation_top_fraction)
        self.imitation_steps = int(cfg.imitation_steps)
        self.imitation_epochs = int(cfg.imitation_epochs)
        self.imitation_lr = float(cfg.imitation_lr)
        self.kl_coef = float(cfg.kl_coef)
        self.kl_target = float(cfg.kl_target) if bool(cfg.adaptive_kl) else None
        self.exploration: dict[str, Any] = {}
        self._data: dict[str, tuple[torch.Tensor, ...]] | None = None
        self._data_iteration = -1
        super().__init__(cfg, game, hierarchy, device, seed)

    # ------------------------------------------------------------------ PSRO's hooks
    def _meta_options(self) -> dict[str, Any]:
        if self.meta_solver == "nash":
            return {"select": "welfare", "welfare": self.welfare_fn}
        return {}

    def _prepare_response(self, solver, player: int) -> None:
        """Start ``player``'s learner from its exploration policy and anchor it there."""
        # ALGO LOGIC: the exploration policy imitates the population's best-welfare episodes
        from dgsolve.solvers.ppo import KLAnchor

        agent = self.agents[player]
        if self._data_iteration != self.iteration:
            self._data = self._exploration_data()
            self._data_iteration = self.iteration
        obs, legal, actions = self._data[agent]
        stats = self.exploration.setdefault("agents", {}).setdefault(agent, {})
        stats["decisions"] = int(obs.shape[0])
        if obs.shape[0] == 0:
            stats.update(imitation_loss=None, anchored=False)
            return  # this player never decides in the episodes kept: PSRO's response
        learner = solver.learner_of[agent]
        fresh = copy.deepcopy(learner.net.state_dict())
        loss = self._imitate(learner.net, obs, legal, actions, player)
        spec = solver.specs[agent]
        stats["imitation_loss"] = loss
        if spec.discrete:  # continuous actions have no uniform likelihood to compare with
            uniform = _uniform_nll(legal, spec.num_actions, obs.shape[0])
            stats["uniform_loss"] = uniform
            stats["anchored"] = loss <= (1.0 - MIN_IMITATION_GAIN) * uniform
        else:
            stats["anchored"] = True
        if not stats["anchored"]:
            learner.net.load_state_dict(fresh)  # nothing to explore toward: PSRO's response
            return
        # ALGO LOGIC: the response maximises E[R] - beta KL(pi || pi_explore)
        anchor = KLAnchor(copy.deepcopy(learner.net), self.kl_coef, self.kl_target)
        solver.anchors[learner.name] = anchor
        self._anchor = (agent, anchor)

    def _respond(self, player: int):
        self._anchor = None
        member = super()._respond(player)
        if self._anchor is not None:
            agent, anchor = self._anchor
            self.exploration["agents"][agent]["final_kl_coef"] = anchor.coef
        return member

    def _step_metrics(self) -> dict:
        metrics = super()._step_metrics()
        psro = metrics["losses"]["psro"]
        if "welfare_threshold" in self.exploration:
            psro["exploration_welfare"] = self.exploration["welfare_threshold"]
        psro["meta_welfare_fn"] = self._meta_welfare()
        return metrics

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["ex2psro"] = {
            "welfare_fn": self.welfare_fn,
            "exploration_top_k": self.top_k,
            "imitation_top_fraction": self.top_fraction,
            "kl_coef": self.kl_coef,
            "adaptive_kl": self.kl_target is not None,
            "meta_welfare": self._meta_welfare(),
            "last_exploration": copy.deepcopy(self.exploration),
        }
        return out

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["exploration"] = copy.deepcopy(self.exploration)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.exploration = copy.deepcopy(dict(state.get("exploration", {})))

    # ------------------------------------------------------------------ internals
    def _meta_welfare(self) -> float:
        """The meta-strategy's welfare by ``welfare_fn`` (the floor: each player's worst
        payoff in the empirical game)."""
        floor = np.array([u.min() for u in self.payoffs])
        return float(meta_game.welfare_of(self.welfare_fn, np.array(self.meta_values), floor))

    def _top_profiles(self) -> list[tuple[int, ...]]:
        """The ``top_k`` joint profiles of the empirical game with the highest welfare (the
        first of equal ones: earlier members)."""
        welfare = meta_game.profile_welfare(self.payoffs, self.welfare_fn)
        order = np.argsort(-welfare.ravel(), kind="stable")[: self.top_k]
        return [tuple(int(i) for i in np.unravel_index(k, welfare.shape)) for k in order]

    @torch.no_grad()
    def _exploration_data(self) -> dict[str, tuple[torch.Tensor, ...]]:
        """Each player's decisions (observations, legal masks, actions) in the best-welfare
        episodes of the top profiles' play (see the module docstring)."""
        game, B = self.game, self.game.num_envs
        profiles = self._top_profiles()
        table = torch.tensor(profiles, device=self.device)  # [P, players]
        generator = torch.Generator(device=self.device).manual_seed(self.seed + 13 + self.iteration)
        ts = game.reset(seed=self.seed * 7 + 10_007 + 1000 * self.iteration)
        drawn = torch.randint(len(profiles), (B,), generator=generator, device=self.device)
        episode = torch.arange(B, device=self.device)
        next_episode = B
        running = torch.zeros(B, len(self.agents), device=self.device)
        rows: dict[str, list[tuple[torch.Tensor, ...]]] = {a: [] for a in self.agents}
        finished_ids, finished_returns = [], []
        steps = 0
        while steps < self.imitation_steps:
            actions = {}
            for p, agent in enumerate(self.agents):
                chosen = table[drawn, p]
                out = None
                for k in torch.unique(chosen).tolist():
                    act = self.members[p][k].act(ts.obs[agent], ts.legal.get(agent))
                    if out is None:
                        out = act.clone()
                    else:
                        mask = (chosen == k).view(-1, *([1] * (act.dim() - 1)))
                        out = torch.where(mask, act, out)
                actions[agent] = out
                acting = ts.acting[agent]
                legal = ts.legal.get(agent)
                rows[agent].append(
                    (
                        episode[acting],
                        ts.obs[agent][acting],
                        None if legal is None else legal[acting],
                        out[acting],
                    )
                )
            ts = game.step(actions)
            steps += B
            running += torch.stack([ts.reward[a] for a in self.agents], -1)
            done = ts.done
            if bool(done.any()):
                finished_ids.append(episode[done])
                finished_returns.append(running[done])
                n = int(done.sum())
                episode = episode.clone()
                episode[done] = torch.arange(next_episode, next_episode + n, device=self.device)
                next_episode += n
                running[done] = 0.0
                redraw = torch.randint(len(profiles), (B,), generator=generator, device=self.device)
                drawn = torch.where(done, redraw, drawn)
        ids = torch.cat(finished_ids) if finished_ids else torch.zeros(0, dtype=torch.long)
        returns = (
            torch.cat(finished_returns).double().cpu().numpy()
            if finished_returns
            else np.zeros((0, len(self.agents)))
        )
        kept = self._best_episodes(ids, returns, profiles)
        out = {}
        for agent in self.agents:
            eps, obs, legal, acts = (list(x) for x in zip(*rows[agent], strict=True))
            eps = torch.cat(eps)
            keep = torch.isin(eps, kept)
            out[agent] = (
                torch.cat(obs)[keep],
                None if legal[0] is None else torch.cat(legal)[keep],
                torch.cat(acts)[keep],
            )
        return out

    def _best_episodes(self, ids: torch.Tensor, returns: np.ndarray, profiles) -> torch.Tensor:
        """The ids of the finished episodes whose welfare is in the top ``top_fraction``."""
        self.exploration = {
            "iteration": self.iteration,
            "profiles": [list(p) for p in profiles],
            "episodes": int(len(ids)),
        }
        if len(ids) == 0:
            self.exploration.update(welfare_threshold=None, episodes_kept=0)
            return ids
        floor = returns.min(0)
        welfare = meta_game.welfare_of(self.welfare_fn, returns, floor)
        threshold = float(np.quantile(welfare, 1.0 - self.top_fraction, method="higher"))
        keep = welfare >= threshold
        self.exploration.update(
            welfare_threshold=threshold,
            episodes_kept=int(keep.sum()),
            kept_returns=returns[keep].mean(0).tolist(),
        )
        return ids[torch.from_numpy(keep).to(ids.device)]

    def _imitate(self, net, obs, legal, actions, player: int) -> float:
        """Behavioural cloning of ``(obs, legal) -> actions`` into ``net``'s actor; the last
        pass's mean negative log-likelihood."""
        from dgsolve.solvers.ppo import minibatches

        params = net.actor_parameters()
        optimizer = torch.optim.Adam(params, lr=self.imitation_lr, eps=1e-5)
        generator = torch.Generator(device="cpu").manual_seed(
            self.seed + 17 + 1000 * self.iteration + player
        )
        n = obs.shape[0]
        parts = max(1, -(-n // IMITATION_BATCH))
        last = float("nan")
        for _ in range(self.imitation_epochs):
            total = 0.0
            perm = torch.randperm(n, generator=generator).to(obs.device)
            for inds in minibatches(perm, parts):
                mask = None if legal is None else legal[inds]
                logp, _ = net.log_prob_entropy(obs[inds], actions[inds], mask)
                loss = -logp.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                total += float(loss.detach()) * len(inds)
            last = total / n
        return last


def _uniform_nll(legal: torch.Tensor | None, num_actions: int, rows: int) -> float:
    """Uniform play's mean negative log-likelihood of any actions at these decisions."""
    if legal is None:
        return float(np.log(num_actions))
    return float(torch.log(legal.sum(-1).double().clamp(min=1)).mean()) if rows else 0.0
