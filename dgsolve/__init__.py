"""dgsolve: equilibria of multi-agent dynamic games with reinforcement learning."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__version__ = "0.1.0"


def lazy_import(name: str) -> ModuleType:
    """Module ``name``, executed on its first attribute access (the recipe of the ``importlib``
    docs, with :class:`importlib.util.LazyLoader`).

    The game modules name torch and numpy this way, so that importing the config schemas that
    live beside the games (``dgsolve --help``, composing a config) does not pay for torch's
    import; the first ``torch.<anything>`` loads it, and from then on it is the plain module.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
