"""YAML for configs, bounded: file size, nesting depth and alias expansion are capped before anything is built.

A 530-byte "billion laughs" document (aliases of aliases) expands to a million leaves; validating it
took 1 GB and the error message echoing it was 8 MB. A 20,000-deep document overflowed the composer's
recursion. Here the event stream (an iterative parser) is checked for depth first, then the node graph
is measured with every alias counted at its full size, and only then is the document constructed.

The scalars are YAML 1.2's: only true/false are booleans (``no`` stays the string 'no', as
mixed_precision needs), and ``1e-4`` is a float rather than the string '1e-4'.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

MAX_BYTES = 1 << 20  # a config file; the shipped ones are under 10 KB
MAX_DEPTH = 32  # nesting of mappings and sequences; the shipped configs reach 4
MAX_NODES = 100_000  # scalars, mappings and sequences after alias expansion


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans and floats (see the module docstring)."""


_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _check_depth(text: str, source: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels; a config is a few levels deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_nodes: set[int], source: str) -> int:
    """Nodes in the document once every alias is replaced by what it names (memoised: linear time)."""
    if id(node) in memo:
        return memo[id(node)]
    if id(node) in open_nodes:
        raise ConfigError(f"{source}: a recursive alias (an anchor used inside itself) is not allowed")
    open_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, memo, open_nodes, source)
        if total > MAX_NODES:
            raise ConfigError(f"{source}: expands to more than {MAX_NODES:,} values (aliases of aliases?); "
                              f"a config holds a few hundred")
    open_nodes.discard(id(node))
    memo[id(node)] = total
    return total


def load_yaml_text(text: str, source: str = "YAML") -> Any:
    """Parse bounded YAML; any problem is one ConfigError naming ``source``, never echoing the document."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise ConfigError(f"{source}: {size:,} bytes is more than the {MAX_BYTES:,} a config may have")
    try:
        _check_depth(text, source)
        node = yaml.compose(text, Loader=_Loader)
        if node is not None:
            _expanded_size(node, {}, set(), source)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_brief(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read") from None


def _brief(exc: yaml.YAMLError) -> str:
    """The parser's message and position, without the echoed source line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{str(problem)[:120]}{where}"


def read_yaml_file(path: Path) -> Any:
    """A YAML file, refusing oversized files before reading them."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes is more than the {MAX_BYTES:,} a config may have")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return load_yaml_text(text, str(path))
