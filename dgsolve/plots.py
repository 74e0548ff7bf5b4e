"""One look for every figure and frame of a run: each agent's colour, line style and marker.

Agent ``i`` in the game's agent order gets style ``i`` everywhere: in ``plots/returns.png``,
``plots/losses.png``, the cross-play figure and ``rollout.gif``. Colours are the Okabe-Ito
palette (Okabe & Ito, "Color Universal Design", 2008), told apart under the common colour-vision
deficiencies; line styles and markers differ too, and later agents are drawn thinner on top, so
two agents with identical curves (a symmetric game) stay visible.

matplotlib and Pillow are imported inside the functions that draw: importing dgsolve stays quick.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Okabe-Ito, ordered so the first colours are the most distinct on white
PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: faint on white)
)
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: curves with at most this many points get markers, so one or two points show
FEW_POINTS = 50


@dataclass(frozen=True)
class Style:
    """How one agent (or learner) is drawn."""

    index: int  # position in the game's agent order (learners without an agent come after)
    colour: str
    linestyle: str
    marker: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.colour.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)

    def line(self, points: int) -> dict[str, Any]:
        """Keyword arguments of ``Axes.plot`` for a curve of ``points`` points."""
        rank = min(self.index, 3)
        few = points <= FEW_POINTS
        return {
            "color": self.colour,
            "linestyle": self.linestyle,
            "linewidth": 2.6 - 0.5 * rank,  # later agents thinner, on top of earlier ones
            "marker": self.marker if few else None,
            "markersize": 7.5 - 1.5 * rank,
            # later agents' markers hollow: the markers they cover still show through
            "markerfacecolor": self.colour if self.index == 0 else "none",
            "markeredgewidth": 1.5,
            "alpha": 0.9,
            "zorder": 2 + 0.01 * self.index,
        }


def agent_styles(agents: Sequence[str], names: Iterable[str] = ()) -> dict[str, Style]:
    """Style ``i`` for ``agents[i]``; each of ``names`` that is not an agent (a learner) gets its
    agent's style: a shared learner ``"a+b"`` that of its first agent, and a learner of no agent
    (``psro``, a tier's name) the next unused one, in the order given."""
    out = {a: _style(i) for i, a in enumerate(agents)}
    extra = len(out)
    for name in names:
        if name in out:
            continue
        first = name.split("+")[0]
        if "+" in name and first in agents:
            out[name] = out[first]
        else:
            out[name] = _style(extra)
            extra += 1
    return out


def _style(i: int) -> Style:
    # the line style also moves on each time the colours wrap, so style i + 8 differs from i
    dash = (i + i // len(PALETTE)) % len(LINESTYLES)
    return Style(i, PALETTE[i % len(PALETTE)], LINESTYLES[dash], MARKERS[i % len(MARKERS)])


def title(what: str, algo: str | None = None, env: str | None = None) -> str:
    """``"what — algo on env"``, with whichever of ``algo`` and ``env`` are known."""
    run = " on ".join(str(x) for x in (algo, env) if x)
    return f"{what} — {run}" if run else what


def new_figure(**kwargs):
    """A matplotlib Figure drawn by Agg, outside pyplot (no global figure list to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


# ---------------------------------------------------------------------- rollout frames
def mpe_pixel(x: float, y: float, cam_range: float, width: int, height: int) -> tuple[float, float]:
    """Where mpe2's ``SimpleEnv.draw`` puts world point ``(x, y)`` on a ``width`` × ``height``
    frame whose camera reaches ``cam_range``: its own expression, floor division included; y
    is flipped."""
    px = (x / cam_range) * width // 2 * 0.9 + width // 2
    py = (-y / cam_range) * height // 2 * 0.9 + height // 2
    return float(px), float(py)


def mpe_screen_positions(env, agents: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Where mpe2 draws each agent in its rgb_array frame: ``(x, y, radius)`` in pixels, by the
    arithmetic of ``mpe2._mpe_utils.simple_env.SimpleEnv.draw``; ``{}`` for an env that is not
    mpe2's (or lacks one of ``agents``)."""
    raw = getattr(env, "unwrapped", env)
    world = getattr(raw, "world", None)
    if world is None or not hasattr(raw, "original_cam_range"):
        return {}
    by_name = {e.name: e for e in world.agents}
    if any(a not in by_name for a in agents):
        return {}
    cam_range = np.max(np.abs(np.array([e.state.p_pos for e in world.entities])))
    zoom = 0.9 * raw.original_cam_range / cam_range if raw.dynamic_rescaling else 1.0
    w, h = raw.width, raw.height
    out = {}
    for a in agents:
        px, py = mpe_pixel(*by_name[a].state.p_pos, cam_range, w, h)
        out[a] = (px, py, float(by_name[a].size * 350 * zoom))
    return out


def label_frames(
    frames: Sequence[np.ndarray],
    agents: Sequence[str],
    positions: Sequence[dict[str, tuple[float, float, float]]] | None = None,
) -> list[np.ndarray]:
    """Each frame with ``step k/N`` in its corner and every agent named in its colour: beside
    the agent where ``positions[k]`` says where it is drawn (``(x, y, radius)`` pixels, as from
    :func:`mpe_screen_positions`), else in a legend strip added above every frame. The
    returned frames all have one size."""
    from PIL import Image, ImageDraw

    if not frames:
        return []
    styles = agent_styles(agents)
    placed = positions is not None and all(set(agents) <= set(p) for p in positions)
    first = np.asarray(frames[0])
    font = _font(max(11, first.shape[0] // 35))
    total = len(frames) - 1
    if not placed:
        return _with_strip(frames, agents, styles, font)
    out = []
    for k, frame in enumerate(frames):
        image = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
        draw = ImageDraw.Draw(image)
        for a in agents:
            x, y, r = positions[k][a]
            _text_beside(draw, image.size, (x, y, r), a, styles[a], font)
        _outlined(draw, (6, 4), f"step {k}/{total}", (0, 0, 0), font)
        out.append(np.asarray(image))
    return out


def _with_strip(frames, agents, styles, font) -> list[np.ndarray]:
    """Frames below a strip that names the agents (a swatch of colour each) and the step."""
    from PIL import Image, ImageDraw

    total = len(frames) - 1
    pad, swatch = 6, _text_size(font, "Ag")[1]
    step_w = _text_size(font, f"step {total}/{total}")[0] + 3 * pad
    items = [(a, swatch + 4 + _text_size(font, a)[0] + 2 * pad) for a in agents]
    frame_w = max(np.asarray(f).shape[1] for f in frames)
    frame_h = max(np.asarray(f).shape[0] for f in frames)
    width = max(frame_w, step_w + max(w for _, w in items))
    # lay the names out left to right, wrapping onto further lines where the width runs out
    rows, x, line = [], step_w, 0
    for a, w in items:
        if x + w > width and x > step_w:
            x, line = step_w, line + 1
        rows.append((a, x, line))
        x += w
    line_h = swatch + 2 * pad
    strip_h = line_h * (line + 1)
    out = []
    for k, frame in enumerate(frames):
        canvas = Image.new("RGB", (width, strip_h + frame_h), (255, 255, 255))
        arr = np.asarray(frame, dtype=np.uint8)
        canvas.paste(Image.fromarray(arr).convert("RGB"), ((width - arr.shape[1]) // 2, strip_h))
        draw = ImageDraw.Draw(canvas)
        draw.text((pad, pad), f"step {k}/{total}", fill=(0, 0, 0), font=font)
        for a, x, ln in rows:
            top = ln * line_h + pad
            draw.rectangle([x, top, x + swatch, top + swatch], fill=styles[a].rgb)
            draw.text((x + swatch + 4, top), a, fill=styles[a].rgb, font=font)
        out.append(np.asarray(canvas))
    return out


def _text_beside(draw, size, where, text: str, style: Style, font) -> None:
    """``text`` right of the circle at ``where`` (left of it near the right edge), kept inside."""
    width, height = size
    x, y, r = where
    tw, th = _text_size(font, text)
    left = x + r + 4
    if left + tw > width - 2:
        left = x - r - 4 - tw
    left = min(max(left, 2), width - tw - 2)
    top = min(max(y - th / 2, 2), height - th - 2)
    _outlined(draw, (left, top), text, style.rgb, font)


def _outlined(draw, xy, text: str, rgb: tuple[int, int, int], font) -> None:
    """Text with a halo that contrasts with its colour: readable over any background."""
    light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 200  # the palette's yellow
    halo = (40, 40, 40) if light else (255, 255, 255)
    draw.text(xy, text, fill=rgb, font=font, stroke_width=2, stroke_fill=halo)


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right - left), int(bottom)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font only
        return ImageFont.load_default()
