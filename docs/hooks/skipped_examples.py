"""mkdocs hook: a code example that the docs tests skip says so on the page.

`tests/test_docs.py` runs every ```python block of `docs/` except those preceded by
`<!-- docs-test: skip (reason) -->`. An HTML comment is invisible, so this hook puts the
reason under it as a line the reader sees.
"""

import re


_SKIP = re.compile(
    r"^(?P<indent>[ \t]*)<!--\s*docs-test:\s*skip\s*\((?P<reason>.*)\)\s*-->[ \t]*$",
    re.MULTILINE,
)


def _note(match: re.Match) -> str:
    # A paragraph of its own (the blank line), indented like the block, so that it stays
    # inside a list item; attr_list gives it a class for styling.
    indent, reason = match["indent"], match["reason"].strip().rstrip(".")
    return f"{indent}*Not run by the docs tests: {reason}.*\n{indent}{{: .docs-test-skip }}\n"


def on_page_markdown(markdown, page, config, files):
    return _SKIP.sub(_note, markdown)
