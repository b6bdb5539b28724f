"""Vendor one CustomResourceDefinition for tests/unit/test_kubernetes.py (see README.md here).

Reads the CRD YAML on stdin and writes it as JSON on stdout with what validation does not read
left out: the schemas' ``description`` texts (most of the bytes) and every version but the ones
named. Nothing a validator reads (types, properties, enums, required, ``x-kubernetes-*``) changes.

    git -C <repo> show <tag>:<path> | python tests/unit/crds/extract.py v1 > tests/unit/crds/<file>
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
SUBSCHEMAS = ("items", "additionalProperties", "not")


def without_descriptions(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its description texts; a property *named* description stays."""
    kept = {key: value for key, value in schema.items() if key != "description"}
    if "properties" in kept:
        kept["properties"] = {
            name: without_descriptions(sub) for name, sub in kept["properties"].items()
        }
    for key in SUBSCHEMAS:
        if isinstance(kept.get(key), dict):
            kept[key] = without_descriptions(kept[key])
    for key in SUBSCHEMA_LISTS:
        if key in kept:
            kept[key] = [without_descriptions(sub) for sub in kept[key]]
    return kept


def main(versions: list[str]) -> None:
    crd = yaml.safe_load(sys.stdin)
    crd["spec"]["versions"] = [
        {
            **version,
            "schema": {
                "openAPIV3Schema": without_descriptions(version["schema"]["openAPIV3Schema"])
            },
        }
        for version in crd["spec"]["versions"]
        if version["name"] in versions
    ]
    assert crd["spec"]["versions"], f"no version {versions} in {crd['metadata']['name']}"
    # One line: indentation would be most of the bytes of these deeply nested schemas.
    json.dump(crd, sys.stdout, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
