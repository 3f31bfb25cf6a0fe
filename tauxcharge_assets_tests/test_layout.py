"""The README's layout lists every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tauxcharge_assets"


def listed_modules() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout") :]
    block = section[section.index("```") + 3 :]
    block = block[: block.index("```")]
    modules, folder = set(), ""
    for line in block.splitlines():
        match = re.match(r"^(\s*)(\S+)", line)
        if not match or match.group(2) == "tauxcharge_assets/":
            continue
        indent, token = len(match.group(1)), match.group(2)
        if indent == 2 and token.endswith("/"):
            folder = token
        elif indent == 2 and token.endswith(".py"):
            folder, _ = "", modules.add(token)
        elif indent == 4 and token.endswith(".py"):
            modules.add(folder + token)
    return modules


def test_the_readme_layout_lists_every_module() -> None:
    actual = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"}
    listed = listed_modules()
    assert not actual - listed, f"modules missing from the README's layout: {sorted(actual - listed)}"
    assert not listed - actual, f"the README's layout lists modules that do not exist: {sorted(listed - actual)}"
