"""Reading the project's compose files as Compose does, merge tags included."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.processes import PROJECT_ROOT


class _ComposeLoader(yaml.SafeLoader):
    """Compose's merge tags: ``!reset`` (drop the base value) and ``!override``."""


def _tagged(tag: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.SequenceNode):
            value: Any = loader.construct_sequence(node)
        elif isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node)
        else:
            value = loader.construct_scalar(node)  # type: ignore[arg-type]
        return {"__tag__": tag, "value": value}

    return construct


_ComposeLoader.add_constructor("!reset", _tagged("reset"))
_ComposeLoader.add_constructor("!override", _tagged("override"))


def load_compose(name: str) -> dict[str, Any]:
    """A compose file of the project, Compose's merge tags kept as ``{"__tag__", "value"}``."""
    return yaml.load((PROJECT_ROOT / name).read_text(), Loader=_ComposeLoader)
