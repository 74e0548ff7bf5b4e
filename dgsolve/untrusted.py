"""Reading a YAML file that came from elsewhere (a run directory's config) as bounded, inert data.

A run directory is shared between people, so its files are read as a hostile party could have
written them:

- **Bounded size.** A file over :data:`MAX_BYTES`, or one that is not a regular file (a FIFO or a
  device named ``run_config.yaml`` would block or never end), is refused before it is parsed.
- **Bounded alias expansion.** YAML anchors and aliases let a few hundred bytes stand for a tree
  of billions of values (the "billion laughs" pattern); the document is composed into nodes
  (aliases are shared references there, cheap) and the size of the tree they expand to is
  counted with memoisation before any value is built. Over :data:`MAX_VALUES`, or an alias that
  contains itself, is refused.
- **Only pure resolvers.** OmegaConf interpolations are evaluated when a config is resolved; a
  resolver such as ``oc.env`` reads the caller's environment and ``oc.decode`` parses strings.
  :func:`load_config` honours only :data:`PURE_RESOLVERS` (selection of the file's own keys and
  dgsolve's arithmetic) and refuses any other name, and it bounds the size that interpolations
  expand to in the same way as aliases (``[${a}, ${a}]`` chains double at every level).
- **Safe tags only**: OmegaConf's YAML loader is PyYAML's ``SafeLoader`` (no ``!!python/...``).

Every refusal is one :class:`~dgsolve.errors.RunDirError` line naming the file and the reason.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dgsolve.errors import RunDirError

#: the largest config file read (dgsolve's own run configs are a few kilobytes)
MAX_BYTES = 1 << 20
#: the most values (mappings, lists and scalars, aliases and interpolations expanded) a config
#: may stand for (dgsolve's own run configs hold a few hundred)
MAX_VALUES = 200_000
#: the largest summary.json read back (dgsolve's own are a few kilobytes)
MAX_SUMMARY_BYTES = 8 << 20
#: the resolvers a config read from elsewhere may use: functions of the file's own values
PURE_RESOLVERS = frozenset({"oc.select", "oc.dict.keys", "oc.dict.values", "dgsolve.prod"})

_RESOLVER = re.compile(r"\$\{\s*([^\s:{}]+)\s*:")
_INTERPOLATION = re.compile(r"\$\{")
_PATH = re.compile(r"\.*[A-Za-z_][\w\-]*(?:\.[\w\-]+)*")


def read_bounded(path: Path | str, limit: int = MAX_BYTES, what: str = "config") -> bytes:
    """The bytes of regular file ``path``, refused in one line if it is larger than ``limit``
    (``what`` the file should be, for the message)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise RunDirError(f"{path} cannot be read ({err.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunDirError(f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as err:
        raise RunDirError(f"{path} cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RunDirError(f"{path} is larger than {limit:,} bytes; it is not a dgsolve {what}")
    return data


def load_json_object(path: Path | str, limit: int, what: str) -> dict:
    """The JSON object in file ``path`` ({} where there is no such file), read within ``limit``
    bytes; damaged JSON or another value than an object is one line naming ``what`` it should
    be (a summary, a history)."""
    path = Path(path)
    if not os.path.lexists(path):
        return {}
    data = read_bounded(path, limit, what)
    try:
        out = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise RunDirError(f"{path} is not readable JSON ({first_line(err)})") from None
    if not isinstance(out, dict):
        raise RunDirError(f"{path} is not a dgsolve {what} (not a JSON object)")
    return out


def load_yaml(path: Path | str) -> Any:
    """The plain data (dicts, lists, scalars) of YAML file ``path``, read within the bounds of
    the module doc; interpolation strings are left as they are (not resolved)."""
    from omegaconf._utils import get_yaml_loader

    path = Path(path)
    text = read_bounded(path).decode("utf-8", errors="replace")
    loader = None
    try:
        loader = get_yaml_loader()(text)  # it already refuses unprintable characters
        node = loader.get_single_node()
        if node is None:
            return None
        count = _expanded_nodes(node, path)
        if count > MAX_VALUES:
            raise RunDirError(
                f"{path} expands to more than {MAX_VALUES:,} values through YAML aliases; it "
                "is not a dgsolve config"
            )
        return loader.construct_document(node)
    except RunDirError:
        raise
    except RecursionError:
        raise RunDirError(f"{path} is nested too deeply to be a dgsolve config") from None
    except Exception as err:  # yaml errors have many types; all mean a damaged file
        raise RunDirError(f"{path} is not a readable config ({first_line(err)})") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_config(path: Path | str) -> DictConfig:
    """YAML file ``path`` as a resolved DictConfig: :func:`load_yaml`, then its interpolations
    checked (only :data:`PURE_RESOLVERS`, bounded expansion) and resolved."""
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise RunDirError(f"{path} is not a dgsolve run config (not a mapping)")
    check_interpolations(data, path)
    try:
        cfg = OmegaConf.create(data)
        return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except RunDirError:
        raise
    except Exception as err:  # a broken interpolation, a key OmegaConf cannot hold, ...
        raise RunDirError(f"{path} is not a usable config ({first_line(err)})") from None


def check_interpolations(data: Any, path: Path | str) -> None:
    """Refuse resolvers outside :data:`PURE_RESOLVERS`, interpolation cycles, and interpolations
    that expand to more than :data:`MAX_VALUES` values (counted as an upper bound: every dotted
    name inside an interpolation that names a key of the file counts as a reference to it)."""
    for where, text in _strings(data, ()):
        for name in _RESOLVER.findall(text):
            if name not in PURE_RESOLVERS:
                raise RunDirError(
                    f"{path}: '{'.'.join(where)}' uses the resolver '{name}', which "
                    "a config from a run directory may not use (it could read this machine's "
                    f"environment, files or code); allowed: {', '.join(sorted(PURE_RESOLVERS))}"
                )
    sizes: dict[tuple[str, ...], int] = {}
    visiting: set[tuple[str, ...]] = set()

    def size(key: tuple[str, ...], value: Any) -> int:
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise RunDirError(f"{path}: the interpolation at '{'.'.join(key)}' is part of a cycle")
        visiting.add(key)
        total = 1
        if isinstance(value, dict):
            total += sum(size((*key, str(k)), v) for k, v in value.items())
        elif isinstance(value, list):
            total += sum(size((*key, str(i)), v) for i, v in enumerate(value))
        elif isinstance(value, str) and _INTERPOLATION.search(value):
            for ref in _references(value):
                target = _lookup(data, key[:-1], ref)
                if target is not None:
                    total += size(target[0], target[1])
        visiting.discard(key)
        sizes[key] = min(total, MAX_VALUES + 1)
        return sizes[key]

    try:
        total = size((), data)
    except RecursionError:
        raise RunDirError(f"{path}: interpolations nested too deeply") from None
    if total > MAX_VALUES:
        raise RunDirError(
            f"{path} expands to more than {MAX_VALUES:,} values through interpolations; it is "
            "not a dgsolve config"
        )


def _strings(value: Any, where: tuple[str, ...]):
    """Every string value (and mapping key) of ``value`` with an interpolation, with its path."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and "${" in k:
                yield (*where, k), k
            yield from _strings(v, (*where, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*where, str(i)))
    elif isinstance(value, str) and "${" in value:
        yield where, value


def _references(text: str) -> list[str]:
    """The dotted names inside the interpolations of ``text``, once per occurrence."""
    out, depth, start = [], 0, 0
    i = 0
    while i < len(text):
        if text.startswith("${", i):
            if depth == 0:
                start = i + 2
            depth += 1
            i += 2
            continue
        if text[i] == "}" and depth:
            depth -= 1
            if depth == 0:
                out += _PATH.findall(text[start:i])
        i += 1
    return out


def _lookup(data: Any, parent: tuple[str, ...], ref: str):
    """``(key, value)`` that ``ref`` names (absolute, or relative with leading dots), or None."""
    dots = len(ref) - len(ref.lstrip("."))
    parts = [p for p in ref.lstrip(".").split(".") if p]
    base = list(parent[: len(parent) - (dots - 1)]) if dots else []
    if dots and dots - 1 > len(parent):
        return None
    node: Any = data
    for part in base:
        node = _child(node, part)
        if node is _ABSENT:
            return None
    key = list(base)
    for part in parts:
        node = _child(node, part)
        if node is _ABSENT:
            return None
        key.append(part)
    return tuple(key), node


_ABSENT = object()


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            if str(k) == part:
                return v
        return _ABSENT
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return _ABSENT


def _expanded_nodes(root, path: Path) -> int:
    """How many nodes the YAML node graph ``root`` stands for with every alias expanded
    (memoised per node object; an alias inside its own anchor is refused)."""
    from yaml.nodes import MappingNode, SequenceNode

    counts: dict[int, int] = {}
    visiting: set[int] = set()

    def count(node) -> int:
        key = id(node)
        if key in counts:
            return counts[key]
        if key in visiting:
            raise RunDirError(f"{path}: a YAML alias contains itself; it is not a dgsolve config")
        visiting.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(count(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total += sum(count(k) + count(v) for k, v in node.value)
        visiting.discard(key)
        counts[key] = min(total, MAX_VALUES + 1)
        return counts[key]

    return count(root)


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` of ``err``, for one-line errors."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
