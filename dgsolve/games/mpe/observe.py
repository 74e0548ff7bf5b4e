"""Observation pieces shared by the torch MPE scenarios (mpe2's ``partial_observability``)."""

from __future__ import annotations

import functools

import torch

from dgsolve.games.mpe.world import distance


def relative(pos: torch.Tensor, agent: int, others: list[int]) -> torch.Tensor:
    """``[B, len(others) * 2]``: positions of entities ``others`` relative to entity ``agent``,
    concatenated in that order (mpe2's ``e.state.p_pos - agent.state.p_pos`` list)."""
    if not others:
        return pos.new_zeros(pos.shape[0], 0)
    return (take(pos, others) - pos[:, agent : agent + 1]).flatten(1)


def take(x: torch.Tensor, entities: list[int]) -> torch.Tensor:
    """``x[:, entities]`` by ``index_select`` with a cached index tensor (a Python list as an
    index builds a new tensor and takes torch's slow advanced-indexing path every call)."""
    return x.index_select(1, _index(tuple(entities), x.device))


@functools.lru_cache(maxsize=1024)
def _index(entities: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(entities, dtype=torch.long, device=device)


def constant(values: tuple, like: torch.Tensor) -> torch.Tensor:
    """``values`` (nested tuples) as a tensor on ``like``'s device and in its dtype, built once
    and cached (per-step colour tables would otherwise be rebuilt from Python every step).
    The tensor is shared: index or copy it, never write to it."""
    return _constant(values, like.device, like.dtype)


@functools.lru_cache(maxsize=256)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, device=device, dtype=dtype)


def nearest_order(pos: torch.Tensor, agent: int, others: list[int], n: int) -> torch.Tensor:
    """``[B, min(n, len(others))]``: indices into ``others`` of the ``n`` entities nearest to
    ``agent``, closest first (mpe2's ``nearest_entities``: ``argsort`` of the distances)."""
    delta = pos[:, others] - pos[:, agent : agent + 1]
    dist = torch.linalg.vector_norm(delta, dim=-1)
    return torch.argsort(dist, dim=1, stable=True)[:, :n]


def padded_nearest(values: torch.Tensor, order: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """``[B, n * width]``: ``values`` ``[B, K, width]`` taken in ``order`` ``[B, k]`` (k ≤ n),
    zero-padded to ``n`` slots (mpe2's ``padded_relative_positions`` and friends)."""
    B = values.shape[0]
    picked = torch.gather(values, 1, order.unsqueeze(-1).expand(-1, -1, width))
    pad = values.new_zeros(B, n - order.shape[1], width)
    return torch.cat([picked, pad], 1).flatten(1)


def chosen(pos: torch.Tensor, entities: list[int], index: torch.Tensor) -> torch.Tensor:
    """The positions of ``entities[index]``: a goal landmark per copy (``index`` ``[B]`` gives
    ``[B, 2]``) or per copy and agent (``[B, K]`` gives ``[B, K, 2]``)."""
    flat = index.long().reshape(index.shape[0], -1)
    picked = torch.gather(take(pos, entities), 1, flat.unsqueeze(-1).expand(-1, -1, 2))
    return picked.reshape(*index.shape, 2)


def seen(
    pos: torch.Tensor, agent: int, others: list[int], n: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What ``agent`` sees of entities ``others``: their relative positions ``[B, k * 2]``,
    all of them in order (``n`` is ``None``, full observability), or the ``n`` nearest, closest
    first and zero-padded to ``n`` slots; and the order they were picked in (``None`` for all),
    so that velocities or words of the same entities can follow (:func:`padded_nearest`)."""
    if n is None:
        return relative(pos, agent, others), None
    order = nearest_order(pos, agent, others, n)
    rel = take(pos, others) - pos[:, agent : agent + 1]
    return padded_nearest(rel, order, n, 2), order


def collisions(pos: torch.Tensor, size: torch.Tensor, a: list[int], b: list[int]) -> torch.Tensor:
    """``[B, len(a), len(b)]`` bool: whether entity ``a[i]`` overlaps entity ``b[j]``
    (mpe2's ``is_collision``: distance below the sum of the radii)."""
    dist = distance(take(pos, a).unsqueeze(2), take(pos, b).unsqueeze(1))
    return dist < (size[a].unsqueeze(1) + size[b].unsqueeze(0))
