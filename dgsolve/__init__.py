"""dgsolve: equilibria of multi-agent dynamic games with reinforcement learning."""

__version__ = "0.1.0"
