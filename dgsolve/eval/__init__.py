"""Evaluation: returns, equilibrium references and gaps, cross-play."""
