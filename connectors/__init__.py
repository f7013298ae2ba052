"""Built-in connectors. Each module is imported only when a destination uses it."""

import sys

# httpx imports its command-line client (rich, pygments and click: ~10 MB and a good
# part of the start-up) whenever those packages are installed; the service never runs
# it. A None entry makes that one import fail, which httpx expects and handles.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
