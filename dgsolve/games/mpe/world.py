"""The MPE world of mpe2 (``mpe2._mpe_utils.core.World``) for a batch of copies, in torch.

Lowe et al. (2017), "Multi-Agent Actor-Critic for Mixed Cooperative-Competitive Environments",
introduced the multi-agent particle environments; mpe2 (Farama) maintains them. This module
implements mpe2's physics step exactly, with every copy of the batch in one tensor:

1. agents' action forces ``u`` (already scaled by their acceleration);
2. soft contact forces between every pair of colliding entities,
   ``contact_force * delta / |delta| * k * log(1 + exp(-(|delta| - r_a - r_b) / k))``;
3. semi-implicit Euler as mpe2 writes it: the position moves by the *old* velocity, then the
   velocity is damped, accelerated by ``force / mass`` and clipped to the entity's top speed;
4. a speaking agent's utterance becomes its communication state (silent agents say zeros).

Entities are ordered as mpe2's ``world.entities``: agents first, then landmarks. The state is
kept in float64 by default, as mpe2 computes in numpy float64, so that long episodes with many
contacts stay within 1e-4 of mpe2 (float32 is available for speed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class WorldLayout:
    """What does not change between copies or steps: the entities and their properties.

    ``size``, ``movable``, ``collide``, ``mass`` and ``max_speed`` run over every entity
    (agents, then landmarks); ``accel`` and ``silent`` over agents. ``max_speed``/``accel`` are
    ``None`` where mpe2's are (no top speed; the default sensitivity 5).
    """

    agents: tuple[str, ...]
    landmarks: tuple[str, ...]
    dim_c: int
    size: tuple[float, ...]
    movable: tuple[bool, ...]
    collide: tuple[bool, ...]
    silent: tuple[bool, ...]
    mass: tuple[float, ...] | None = None
    max_speed: tuple[float | None, ...] | None = None
    accel: tuple[float | None, ...] | None = None
    dt: float = 0.1
    damping: float = 0.25
    contact_force: float = 1e2
    contact_margin: float = 1e-3

    def __post_init__(self) -> None:
        entities, agents = len(self.agents) + len(self.landmarks), len(self.agents)
        for name, value, n in [
            ("size", self.size, entities),
            ("movable", self.movable, entities),
            ("collide", self.collide, entities),
            ("silent", self.silent, agents),
            ("mass", self.mass, entities),
            ("max_speed", self.max_speed, entities),
            ("accel", self.accel, agents),
        ]:
            if value is not None and len(value) != n:
                raise ValueError(f"WorldLayout.{name} has {len(value)} entries, expected {n}")

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def num_entities(self) -> int:
        return len(self.agents) + len(self.landmarks)

    @property
    def entity_names(self) -> tuple[str, ...]:
        return self.agents + self.landmarks


@dataclass
class WorldState:
    """Every copy's physical state: ``pos``/``vel`` ``[B, E, 2]``, ``comm`` ``[B, A, dim_c]``,
    and the scenario's own per-copy tensors in ``extra`` (goals, colours), each ``[B, ...]``."""

    pos: torch.Tensor
    vel: torch.Tensor
    comm: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def at_rest(
        cls, pos: torch.Tensor, layout: WorldLayout, extra: dict[str, torch.Tensor] | None = None
    ) -> WorldState:
        """Entities at ``pos`` ``[B, E, 2]``, standing still and silent (how every mpe2
        scenario's ``reset_world`` leaves velocities and communication)."""
        B = pos.shape[0]
        comm = pos.new_zeros(B, layout.num_agents, layout.dim_c)
        return cls(pos, torch.zeros_like(pos), comm, dict(extra or {}))

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor by name (``extra`` keys prefixed ``extra.``)."""
        out = {"pos": self.pos, "vel": self.vel, "comm": self.comm}
        out.update({f"extra.{k}": v for k, v in self.extra.items()})
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> WorldState:
        extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
        return cls(tensors["pos"], tensors["vel"], tensors["comm"], extra)

    def where(self, mask: torch.Tensor, other: WorldState) -> WorldState:
        """``other`` in the copies where ``mask`` (``[B]`` bool) is true, ``self`` elsewhere."""

        def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            m = mask.view(-1, *([1] * (a.dim() - 1)))
            return torch.where(m, b, a)

        return WorldState(
            pick(self.pos, other.pos),
            pick(self.vel, other.vel),
            pick(self.comm, other.comm),
            {k: pick(v, other.extra[k]) for k, v in self.extra.items()},
        )

    def clone(self) -> WorldState:
        return WorldState.from_tensors({k: v.clone() for k, v in self.tensors().items()})


class Physics:
    """mpe2's ``World.step`` for a :class:`WorldLayout`, on ``device`` in ``dtype``."""

    def __init__(self, layout: WorldLayout, device: torch.device, dtype: torch.dtype):
        self.layout = layout
        self.device, self.dtype = device, dtype
        E, A = layout.num_entities, layout.num_agents

        def vec(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(values, device=device, dtype=dtype)

        self.movable = torch.tensor(layout.movable, device=device).view(1, E, 1)
        self.mass = vec(layout.mass if layout.mass is not None else [1.0] * E).view(1, E, 1)
        top = layout.max_speed if layout.max_speed is not None else [None] * E
        self.capped = any(s is not None for s in top)
        self.max_speed = vec([float("inf") if s is None else s for s in top]).view(1, E)
        accel = layout.accel if layout.accel is not None else [None] * A
        self.sensitivity = vec([5.0 if a is None else a for a in accel]).view(1, A, 1)
        self.speaks = torch.tensor([not s for s in layout.silent], device=device).view(1, A, 1)
        # every unordered pair of colliding entities, in mpe2's (a < b) order
        pairs = [
            (a, b)
            for a in range(E)
            for b in range(a + 1, E)
            if layout.collide[a] and layout.collide[b]
        ]
        self.pair_a = torch.tensor([a for a, _ in pairs], device=device, dtype=torch.long)
        self.pair_b = torch.tensor([b for _, b in pairs], device=device, dtype=torch.long)
        self.pair_min = vec([layout.size[a] + layout.size[b] for a, b in pairs]).view(1, -1)
        self.push_a = vec([float(layout.movable[a]) for a, _ in pairs]).view(1, -1, 1)
        self.push_b = vec([float(layout.movable[b]) for _, b in pairs]).view(1, -1, 1)

    def contact_forces(self, pos: torch.Tensor) -> torch.Tensor:
        """``[B, E, 2]``: the sum of the soft contact forces on every entity."""
        force = torch.zeros_like(pos)
        if self.pair_a.numel() == 0:
            return force
        lay = self.layout
        delta = pos.index_select(1, self.pair_a) - pos.index_select(1, self.pair_b)
        dist = torch.linalg.vector_norm(delta, dim=-1)
        k = lay.contact_margin
        penetration = torch.nn.functional.softplus(-(dist - self.pair_min) / k) * k
        f = lay.contact_force * delta / dist.unsqueeze(-1) * penetration.unsqueeze(-1)
        force.index_add_(1, self.pair_a, f * self.push_a)
        force.index_add_(1, self.pair_b, -f * self.push_b)
        return force

    def step(self, state: WorldState, u: torch.Tensor, comm: torch.Tensor) -> WorldState:
        """One step: ``u`` ``[B, A, 2]`` the agents' unit controls (before sensitivity),
        ``comm`` ``[B, A, dim_c]`` their utterances. Returns the next state (``extra`` shared)."""
        lay = self.layout
        A = lay.num_agents
        force = self.contact_forces(state.pos)
        force[:, :A] += u * self.sensitivity
        pos = state.pos + state.vel * lay.dt
        vel = state.vel * (1 - lay.damping) + force / self.mass * lay.dt
        if self.capped:
            speed = torch.sqrt(vel[..., 0].square() + vel[..., 1].square())
            over = speed > self.max_speed
            scale = torch.where(over, self.max_speed / speed.clamp_min(1e-30), 1.0)
            vel = vel * scale.unsqueeze(-1)
        pos = torch.where(self.movable, pos, state.pos)
        vel = torch.where(self.movable, vel, state.vel)
        said = torch.where(self.speaks, comm, torch.zeros_like(comm))
        return WorldState(pos, vel, said, state.extra)


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance over the last dimension, of size 2 (mpe2's
    ``sqrt(sum(square(a - b)))``, summed as numpy sums two numbers; a reduction over a
    dimension of 2 is several times slower in torch than this)."""
    d = a - b
    x, y = d[..., 0], d[..., 1]
    return torch.sqrt(x * x + y * y)


def uniform(
    shape: Sequence[int],
    low: float,
    high: float,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``U(low, high)`` samples from ``generator`` (mpe2's ``np_random.uniform``)."""
    r = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    return low + (high - low) * r
