"""Frames of the torch MPE state, drawn with the arithmetic of mpe2's ``SimpleEnv.draw``.

A 700×700 white canvas; the camera reaches the entity farthest from the origin; with
``dynamic_rescaling`` radii shrink as the camera zooms out (relative to the first frame's
range). Entities are circles in their mpe2 colour (``color * 200``) with a black border;
speaking agents' last words are written at the bottom left ("agent sends A"). Agents' names are
added by :func:`dgsolve.plots.label_frames` from the returned positions.
"""

from __future__ import annotations

import numpy as np

_SIZE = 700
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def draw_frame(game, original_cam_range: float, copy: int = 0):
    """Copy ``copy`` of ``game`` (a :class:`~dgsolve.games.mpe.game.TorchMPEGame`) as an RGB
    frame ``[700, 700, 3]`` uint8, and every agent's ``(x, y, radius)`` on it in pixels."""
    from PIL import Image, ImageDraw

    from dgsolve.plots import mpe_pixel

    lay = game.layout
    pos = game.state.pos[copy].detach().cpu().double().numpy()
    colors = game.scenario.colors(game.state)[copy].detach().cpu().double().numpy()
    comm = game.state.comm[copy].detach().cpu().double().numpy()
    cam_range = float(np.max(np.abs(pos))) or 1.0
    zoom = 0.9 * original_cam_range / cam_range if game.dynamic_rescaling else 1.0
    image = Image.new("RGB", (_SIZE, _SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    where = {}
    for e, name in enumerate(lay.entity_names):
        px, py = mpe_pixel(*pos[e], cam_range, _SIZE, _SIZE)
        r = lay.size[e] * 350 * zoom
        fill = tuple(int(v) for v in np.clip(colors[e] * 200, 0, 255))
        draw.ellipse([px - r, py - r, px + r, py + r], fill=fill, outline=(0, 0, 0))
        if e < lay.num_agents:
            where[name] = (px, py, float(r))
    line = 0
    for i, agent in enumerate(lay.agents):
        if lay.silent[i]:
            continue
        words = comm[i]
        if np.all(words == 0):
            word = "_"
        elif game.continuous_actions:
            word = "[" + ",".join(f"{w:.2f}" for w in words) + "]"
        else:
            word = _ALPHABET[int(np.argmax(words))]
        draw.text(
            (_SIZE * 0.05, _SIZE * 0.95 - _SIZE * 0.05 * line),
            f"{agent} sends {word}",
            fill=(0, 0, 0),
        )
        line += 1
    return np.asarray(image, dtype=np.uint8), where
