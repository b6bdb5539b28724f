"""Every relative link in the README and the docs leads somewhere: to a file that exists and, when
it names an anchor, to a heading of that file (GitHub's anchors: lower case, punctuation dropped,
spaces as hyphens, ``-1``, ``-2`` … for repeats)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [
        ROOT / "README.md",
        ROOT / "deploy" / "kubernetes" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)
# [text](target) and [text](target "title"); images too. Not inside code spans or blocks.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path``."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.replace("`", "").strip().lower()).replace(" ", "-")
        found.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return found


def relative_links(document: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(document.read_text()))
        if not urlsplit(target).scheme and not target.startswith("//")
    ]


def broken_links(document: Path) -> list[str]:
    broken = []
    for target in relative_links(document):
        parts = urlsplit(target)
        destination = (document.parent / unquote(parts.path)).resolve() if parts.path else document
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif parts.fragment:
            if destination.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not Markdown")
            elif parts.fragment not in anchors(destination):
                broken.append(f"{target}: no heading #{parts.fragment} in {destination.name}")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == []


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## What `it` does\n\n## What it does!\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#what-it-does) [ok too](other.md#what-it-does-1)"
        " [self](#page) [web](https://example.com/x) `[code](nowhere.md)`\n\n"
        "```\n[block](nowhere.md)\n```\n"
        "[gone](gone.md) [no heading](other.md#what-it-doesnt)\n"
    )
    assert broken_links(page) == [
        "gone.md: no such file",
        "other.md#what-it-doesnt: no heading #what-it-doesnt in other.md",
    ]


def test_the_documents_are_found() -> None:
    names = {str(path.relative_to(ROOT)) for path in DOCUMENTS}
    assert {"README.md", "docs/configuration.md", "docs/operations.md"} <= names
    assert {"docs/architecture.md", "docs/BENCHMARKS.md", "deploy/kubernetes/README.md"} <= names
