"""NashConv against wall time: dgsolve's imperfect-information solvers next to OpenSpiel's own.

For each game (Kuhn and Leduc poker by default) and method, one run of ``seconds`` of training
wall time (evaluation excluded), NashConv measured exactly through OpenSpiel at checkpoints:

* ``dgsolve:<algo>``: ``dgsolve env=openspiel env.game=<game> algo=<algo>`` through
  :func:`dgsolve.run.run`, its defaults but a budget that only the timer ends
  (:data:`UNTIL_STOPPED`), with ``task.eval_every`` set for the curve
  (``history.json``'s ``eq/nash_conv`` against ``wall_time_s``);
* ``openspiel:nfsp`` and ``openspiel:deep_cfr``: OpenSpiel's PyTorch NFSP and Deep CFR with the
  settings of OpenSpiel's own examples (``nfsp_kuhn_pytorch.py``, ``deep_cfr_pytorch.py``),
  trained in chunks between measurements.

Prints one JSON line per measurement and a summary line per run, and writes
``imperfect_info.png`` (NashConv against wall time, log scale) into ``out=``. Kuhn and Leduc
poker are two-player zero-sum, so each line also gives the exploitability, NashConv / 2.

    python benchmarks/imperfect_info.py                          # all, 300 s Kuhn, 600 s Leduc
    python benchmarks/imperfect_info.py games=kuhn_poker methods=dgsolve:cfr,openspiel:nfsp \\
        seconds=60
    python benchmarks/imperfect_info.py games=leduc_poker methods=dgsolve:deep_cfr \\
        algo.traversals=375 algo.advantage_steps=375     # dotted keys go to dgsolve's runs
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SECONDS = {"kuhn_poker": 300, "leduc_poker": 600}
METHODS = (
    "dgsolve:nfsp",
    "dgsolve:deep_cfr",
    "openspiel:nfsp",
    "openspiel:deep_cfr",
)


#: budgets large enough that the timer, not the budget, ends dgsolve's runs (equal wall time)
UNTIL_STOPPED = {
    "nfsp": ["algo.total_timesteps=2000000000"],
    "deep_cfr": ["algo.iterations=1000000"],
}


#: iterations between NashConv measurements: NFSP's are 10,000 environment steps, Deep CFR's
#: whole iterations. dgsolve's clock runs through its evaluations (OpenSpiel's does not).
EVAL_EVERY = {"nfsp": 2, "deep_cfr": 5}


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


# --------------------------------------------------------------------------- OpenSpiel's own
def openspiel_nash_conv(game, action_probabilities) -> float:
    import pyspiel
    from open_spiel.python import policy

    table = policy.tabular_policy_from_callable(game, action_probabilities)
    return float(pyspiel.nash_conv(game, policy.python_policy_to_pyspiel_policy(table)))


def openspiel_nfsp(load_string: str, seconds: float, seed: int) -> list[tuple[float, float]]:
    """OpenSpiel's PyTorch NFSP with ``nfsp_kuhn_pytorch.py``'s settings; NashConv of the
    average policies every 10,000 episodes (as that example evaluates)."""
    import numpy as np
    import pyspiel
    import torch
    from open_spiel.python import rl_environment
    from open_spiel.python.pytorch import nfsp

    np.random.seed(seed)
    torch.manual_seed(seed)
    env = rl_environment.Environment(load_string)
    game = env.game
    n = game.num_players()
    size, actions = env.observation_spec()["info_state"][0], env.action_spec()["num_actions"]
    agents = [
        nfsp.NFSP(
            p,
            size,
            actions,
            [128],
            int(2e6),
            0.1,
            replay_buffer_capacity=int(2e5),
            epsilon_decay_duration=int(3e6),
            epsilon_start=0.06,
            epsilon_end=0.001,
        )
        for p in range(n)
    ]

    def average(state, player_id=None):
        p = state.current_player()
        obs = {
            "info_state": [state.information_state_tensor(q) for q in range(n)],
            "legal_actions": [state.legal_actions(q) for q in range(n)],
            "current_player": p,
        }
        step = rl_environment.TimeStep(obs, None, None, None)
        with agents[p].temp_mode_as(nfsp.MODE.AVERAGE_POLICY):
            probs = agents[p].step(step, is_evaluation=True).probs
        return {a: float(probs[a]) for a in state.legal_actions()}

    curve, trained, episodes = [], 0.0, 0
    assert isinstance(game, pyspiel.Game)
    while trained < seconds:
        start = time.perf_counter()
        for _ in range(10_000):
            ts = env.reset()
            while not ts.last():
                p = ts.observations["current_player"]
                ts = env.step([agents[p].step(ts).action])
            for agent in agents:
                agent.step(ts)
            episodes += 1
            if trained + time.perf_counter() - start >= seconds:
                break
        trained += time.perf_counter() - start
        curve.append((trained, openspiel_nash_conv(game, average)))
    return curve


def openspiel_deep_cfr(load_string: str, seconds: float, seed: int) -> list[tuple[float, float]]:
    """OpenSpiel's PyTorch Deep CFR with ``deep_cfr_pytorch.py``'s settings, ten iterations per
    chunk; NashConv of its strategy network after each chunk."""
    import pyspiel
    from open_spiel.python.pytorch import deep_cfr

    game = pyspiel.load_game(load_string)
    solver = deep_cfr.DeepCFRSolver(
        game,
        policy_network_layers=(64,),
        advantage_network_layers=(64,),
        num_iterations=10,
        num_traversals=375,
        reinitialize_advantage_networks=True,
        learning_rate=1e-3,
        batch_size_advantage=256,
        batch_size_strategy=256,
        memory_capacity=100000,
        policy_network_train_steps=2500,
        advantage_network_train_steps=375,
        seed=seed,
    )
    return timed_curve(seconds, solver.solve, lambda: solver.action_probabilities, game)


def timed_curve(seconds: float, train, policy, game) -> list[tuple[float, float]]:
    """Call ``train()`` until ``seconds`` of it have passed; after each call, the NashConv of
    ``policy()`` (an ``action_probabilities`` callable), off the clock."""
    curve, trained = [], 0.0
    while trained < seconds:
        start = time.perf_counter()
        train()
        trained += time.perf_counter() - start
        curve.append((trained, openspiel_nash_conv(game, policy())))
    return curve


# --------------------------------------------------------------------------- dgsolve's
def dgsolve_run(
    load_string: str,
    algo: str,
    seconds: float,
    seed: int,
    extra: list[str] = (),
    until_stopped: dict[str, list[str]] = UNTIL_STOPPED,
    eval_every: dict[str, int] = EVAL_EVERY,
    aliases: dict[str, str] | None = None,
) -> list[tuple[float, float]]:
    """``dgsolve env=openspiel env.game=<game> algo=<algo>`` with its defaults, stopped by a
    timer after ``seconds`` of training (SIGINT, as a user would), curve from its history;
    ``until_stopped[algo]`` and ``eval_every[algo]`` as :data:`UNTIL_STOPPED` and
    :data:`EVAL_EVERY`; ``aliases[algo]``: the algo config a method name runs (its own name
    where it has none), the method's own settings in ``until_stopped``."""
    import os
    import signal
    import threading

    from hydra import compose, initialize_config_dir

    from dgsolve.cli import config_dir
    from dgsolve.config import register_configs
    from dgsolve.run import run

    register_configs()
    overrides = [
        "env=openspiel",
        f"env.game={load_string}",
        f"algo={(aliases or {}).get(algo, algo)}",
        f"seed={seed}",
        "hardware=cpu",
        "task.progress=false",
        f"task.eval_every={eval_every.get(algo, 5)}",
        *until_stopped.get(algo, []),
        *extra,
    ]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    out = Path(tempfile.mkdtemp(prefix=f"dgsolve-{algo}-"))
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        run(cfg, out)
    finally:
        timer.cancel()
    history = json.loads((out / "history.json").read_text())["evaluations"]
    return list(zip(history.get("wall_time_s", []), history.get("eq/nash_conv", []), strict=True))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = sorted({g for g, _ in results})
    fig, axes = plt.subplots(1, len(games), figsize=(6 * len(games), 4), squeeze=False)
    for ax, game in zip(axes[0], games, strict=True):
        for (g, method), curve in results.items():
            if g == game and curve:
                ax.plot(*zip(*curve, strict=True), marker=".", label=method)
        ax.set_yscale("log")
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel("NashConv")
        ax.set_title(game)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(
    argv: list[str],
    methods: tuple[str, ...] = METHODS,
    openspiel_methods: dict | None = None,
    default_seconds: dict[str, float] = DEFAULT_SECONDS,
    plot_name: str = "imperfect_info.png",
    **dgsolve_budgets,
) -> None:
    """Run every ``game`` × ``method`` of ``argv`` (``games=``, ``methods=``, ``seconds=``,
    ``seed=``, ``out=``, dotted dgsolve overrides), print the curves and plot them.
    ``openspiel_methods``: ``{algo: f(load_string, seconds, seed) -> curve}`` for
    ``openspiel:<algo>`` (OpenSpiel's NFSP and Deep CFR by default); ``dgsolve_budgets`` go to
    :func:`dgsolve_run`."""
    if openspiel_methods is None:
        openspiel_methods = {"nfsp": openspiel_nfsp, "deep_cfr": openspiel_deep_cfr}
    # dotted keys (algo.lr=..., task.eval_every=...) are overrides of dgsolve's runs
    args = dict(a.split("=", 1) for a in argv if "." not in a.split("=", 1)[0])
    extra = [a for a in argv if "." in a.split("=", 1)[0]]
    games = args.get("games", "kuhn_poker,leduc_poker").split(",")
    methods = args.get("methods", ",".join(methods)).split(",")
    seed = int(args.get("seed", 0))
    out = Path(args.get("out", "."))
    results = {}
    for game in games:
        seconds = float(args.get("seconds", default_seconds.get(game, 300)))
        for method in methods:
            source, algo = method.split(":")
            if source == "dgsolve":
                curve = dgsolve_run(game, algo, seconds, seed, extra, **dgsolve_budgets)
            else:
                curve = openspiel_methods[algo](game, seconds, seed)
            results[(game, method)] = curve
            for wall, conv in curve:
                emit(game=game, method=method, wall_time_s=round(wall, 2), nash_conv=conv,
                     exploitability=conv / 2)  # fmt: skip
            final = curve[-1] if curve else (None, None)
            emit(game=game, method=method, seconds=seconds, seed=seed, final_nash_conv=final[1],
                 final_exploitability=None if final[1] is None else final[1] / 2)  # fmt: skip
    plot(results, out / plot_name)


if __name__ == "__main__":
    main(sys.argv[1:])
