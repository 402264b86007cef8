"""The code blocks of the project's Markdown: every fenced `python` and `bash` block of
README.md and docs/*.md, where it starts, and whether it is marked not to run.

A block that is not meant to run (two hosts, a GPU) has this line right before its
opening fence (blank lines between are allowed):

    <!-- docs-test: skip (the reason) -->
"""

import re
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
LANGUAGES = ("python", "bash")
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
MARK = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
SKIP = re.compile(r"skip \((.+)\)")


class Block(NamedTuple):
    path: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skip: str | None  # the reason, when marked not to run

    @property
    def id(self):
        return f"{self.path}:{self.line}"


def markdown_files(repo=REPO):
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def extract(markdown, path="<text>"):
    """The `python` and `bash` blocks of `markdown` (a string), in order.

    Raises:
        ValueError: an unclosed fence, or a mark that is not `skip (reason)` or
            that no python/bash block follows.
    """
    blocks, mark, lines = [], None, markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        found = MARK.match(line)
        fence = FENCE.match(line)
        if found:
            if mark or not SKIP.fullmatch(found.group(1)):
                raise ValueError(f"{path}:{i + 1}: a mark is `docs-test: skip (reason)`, once")
            mark = (i + 1, SKIP.fullmatch(found.group(1)).group(1))
        elif fence:
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1))),
                None,
            )
            if end is None:
                raise ValueError(f"{path}:{i + 1}: unclosed code fence")
            language = fence.group(2)
            if language in LANGUAGES:
                text = "\n".join(lines[i + 1 : end]) + "\n"
                blocks.append(Block(path, i + 1, language, text, mark[1] if mark else None))
            elif mark:
                raise ValueError(f"{path}:{mark[0]}: the mark is not before a python/bash block")
            mark, i = None, end
        elif line.strip() and mark:
            raise ValueError(f"{path}:{mark[0]}: the mark is not right before a code block")
        i += 1
    if mark:
        raise ValueError(f"{path}:{mark[0]}: the mark is not before a code block")
    return blocks


def all_blocks(repo=REPO):
    """Every python and bash block of README.md and docs/*.md."""
    return [
        block
        for file in markdown_files(repo)
        for block in extract(file.read_text(), str(file.relative_to(repo)))
    ]
