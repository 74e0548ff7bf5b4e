"""NashConv against wall time: dgsolve's PSRO next to OpenSpiel's ``psro_v2``, on Kuhn and Leduc.

Methods, each for the same ``seconds`` of training wall time:

* ``dgsolve:psro``: ``dgsolve env=openspiel env.game=<game> algo=psro`` with its defaults (the
  exact oracle, the ``nash`` meta-solver, the exact empirical game) but budgets that only the
  timer or convergence ends; NashConv of the meta-strategy mixture from the run's
  ``eq/nash_conv`` curve (``task.eval_every`` iterations apart; the clock runs through them);
* ``dgsolve:psro_ppo``: the same with ``algo.oracle=ppo`` (PPO responses of ``algo.br_steps``
  environment steps against the mixtures, the exact empirical game);
* ``openspiel:psro``: OpenSpiel's ``psro_v2.PSROSolver`` with its exact oracle
  (``BestResponseOracle``) and the settings of ``psro_v2_example.py`` (1000 simulations per
  entry, probabilistic strategy selection) but the ``nash`` meta-solver (its LP, through
  cvxpy/ECOS: the ``openspiel`` extra installs them), NashConv of the aggregated mixture after
  every iteration (its evaluation excluded from the clock).

Prints one JSON line per measurement and a summary line per run, and writes
``populations.png`` into ``out=``::

    python benchmarks/populations.py                        # all, 60 s Kuhn, 600 s Leduc
    python benchmarks/populations.py games=kuhn_poker seconds=30 methods=openspiel:psro
    python benchmarks/populations.py games=leduc_poker algo.meta_solver=replicator
"""

from __future__ import annotations

import sys

from imperfect_info import main, timed_curve

DEFAULT_SECONDS = {"kuhn_poker": 60, "leduc_poker": 600}
METHODS = ("dgsolve:psro", "dgsolve:psro_ppo", "openspiel:psro")
#: budgets large enough that only the timer (or convergence) ends dgsolve's runs
UNTIL_STOPPED = {
    "psro": ["algo.iterations=1000000", "algo.max_policies=1000000"],
    "psro_ppo": ["algo.iterations=1000000", "algo.max_policies=1000000", "algo.oracle=ppo"],
}
EVAL_EVERY = {"psro": 2, "psro_ppo": 1}
ALIASES = {"psro_ppo": "psro"}


def openspiel_psro(load_string: str, seconds: float, seed: int) -> list[tuple[float, float]]:
    """OpenSpiel's PSRO with its exact best-response oracle, ``psro_v2_example.py``'s settings
    but the ``nash`` meta-solver."""
    import numpy as np
    import pyspiel
    from open_spiel.python import policy
    from open_spiel.python.algorithms import policy_aggregator
    from open_spiel.python.algorithms.psro_v2 import (
        best_response_oracle,
        psro_v2,
        strategy_selectors,
    )

    np.random.seed(seed)
    game = pyspiel.load_game(load_string)
    players = range(game.num_players())
    uniform = policy.TabularPolicy(game)
    oracle = best_response_oracle.BestResponseOracle(game=game, policy=uniform)
    solver = psro_v2.PSROSolver(
        game,
        oracle,
        initial_policies=[uniform.__copy__() for _ in players],
        training_strategy_selector=strategy_selectors.probabilistic,
        rectifier="",
        sims_per_entry=1000,
        number_policies_selected=1,
        meta_strategy_method="nash",
        prd_iterations=50000,
        prd_gamma=1e-10,
        sample_from_marginals=True,
        symmetric_game=False,
    )

    def mixture():
        aggregator = policy_aggregator.PolicyAggregator(game)
        policies, sigma = solver.get_policies(), solver.get_meta_strategies()
        return aggregator.aggregate(players, policies, sigma).action_probabilities

    return timed_curve(seconds, solver.iteration, mixture, game)


if __name__ == "__main__":
    main(
        sys.argv[1:],
        methods=METHODS,
        openspiel_methods={"psro": openspiel_psro},
        default_seconds=DEFAULT_SECONDS,
        plot_name="populations.png",
        until_stopped=UNTIL_STOPPED,
        eval_every=EVAL_EVERY,
        aliases=ALIASES,
    )
