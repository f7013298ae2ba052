"""Copy the example plugin and its test into README.md (between the markers).

python scripts/sync_readme.py          # rewrite README.md
python scripts/sync_readme.py --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = {
    "example-plugin": ROOT / "examples" / "plugins" / "teams.py",
    "example-test": ROOT / "tests" / "connectors" / "test_example_plugin.py",
}


def render(readme: str) -> str:
    for name, path in BLOCKS.items():
        code = path.read_text().rstrip("\n")
        pattern = re.compile(
            rf"(<!-- {name}:start -->\n```python\n).*?(\n```\n<!-- {name}:end -->)", re.DOTALL
        )
        readme, count = pattern.subn(lambda m, code=code: m.group(1) + code + m.group(2), readme)
        if count != 1:
            raise SystemExit(f"README.md: marker {name} not found exactly once")
    return readme


def main() -> int:
    path = ROOT / "README.md"
    current = path.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if current != wanted:
            print("README.md is out of date: run python scripts/sync_readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
