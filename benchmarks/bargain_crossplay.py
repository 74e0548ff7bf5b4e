"""Cross-play of the four bargaining baselines (BARGAIN.md): every ordered pair, 20,000 games each.

Row = the policy playing P1, column = the policy playing P2; every pair plays the same 20,000
deals (one seed). Prints the table as one JSON object, then as readable text. Sanity references
from BARGAIN.md: walking at once gives welfare about 1.00, and no pair can exceed about 1.35.
"""

from __future__ import annotations

import json

from dgsolve.eval.crossplay import crossplay_matrix
from dgsolve.games.bargain.baselines import BASELINES, make_baseline

GAMES = 20_000
SEED = 0


def main() -> None:
    policies = {name: make_baseline(name, seed=SEED) for name in BASELINES}
    table = crossplay_matrix(policies, num_games=GAMES, seed=SEED, device="cpu")
    names = table["policies"]
    rounded = {
        k: [[round(x, 4) for x in row] for row in v] if k != "policies" else v
        for k, v in table.items()
    }
    print(json.dumps({"games_per_pair": GAMES, **rounded}))
    width = max(map(len, names)) + 2
    for key in ("p1", "p2", "welfare", "agreement_rate"):
        print(f"\n{key} (row: P1, column: P2)")
        print(" " * width + "".join(f"{n:>{width}}" for n in names))
        for name, row in zip(names, table[key], strict=True):
            print(f"{name:<{width}}" + "".join(f"{x:>{width}.3f}" for x in row))


if __name__ == "__main__":
    main()
