"""A catalog at scale: a module of 5,000 typed, documented flows becomes a catalog.

Prints one JSON object:

- `import_s`: importing the module (Prefect builds each flow's parameter schema
  when `@flow` runs; not ours, shown for scale).
- `register_s`: `ActionCatalog.register_module` on the imported module, and per flow
  in ms. Goal: <= 2 s for 5,000 flows.
- `search_ms`: `ActionCatalog.search` for 40 goals: the first call (it builds the
  index) and p50 / p95 of the others. Goal: p95 < 5 ms.

Run: `.venv/bin/python bench/catalog.py [--flows N]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planning import NOUNS, STAGES, import_source

from prefect_aether import ActionCatalog


def module_source(flows: int) -> str:
    """`flows` flows: pipelines of five stages over nouns and numbered sources."""
    lines = ["from typing import TypedDict", "from prefect import flow", ""]
    count = 0
    source = 0
    while count < flows:
        for noun in NOUNS:
            for verb, doc, consumes, produces in STAGES:
                if count >= flows:
                    break
                where = f"src{source}"
                name = f"{verb}_{noun}_{where}"
                param = (consumes or "").format(noun=noun)
                out = f"{produces.format(noun=noun)}_{where}"
                args = f"{param}_{where}: list[dict]" if consumes else "limit: int = 100"
                kind = name.title().replace("_", "")
                lines += [
                    f"class {kind}Out(TypedDict):",
                    f"    {out}: list[dict]",
                    "",
                    f'@flow(name="{name}", version="1")',
                    f"def {name}({args}) -> {kind}Out:",
                    f'    """{doc.format(noun=noun, source=where)}"""',
                    f"    return {{'{out}': []}}",
                    "",
                ]
                count += 1
        source += 1
    return "\n".join(lines)


def main(flows: int) -> dict[str, Any]:
    started = time.perf_counter()
    module = import_source(module_source(flows), "many_flows")
    imported = time.perf_counter() - started
    catalog = ActionCatalog()
    started = time.perf_counter()
    catalog.register_module(module)
    registered = time.perf_counter() - started
    queries = [
        f"{verb} the {noun} rows from src{i}"
        for i, (noun, (verb, *_)) in enumerate((n, s) for n in NOUNS for s in STAGES[:4])
    ]
    started = time.perf_counter()
    catalog.search(queries[0])
    first = time.perf_counter() - started
    times = []
    for query in queries[1:]:
        started = time.perf_counter()
        catalog.search(query)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "flows": len(catalog),
        "import_s": round(imported, 2),
        "register_s": round(registered, 3),
        "register_ms_per_flow": round(registered * 1000 / len(catalog), 3),
        "search_ms": {
            "first_with_index": round(first * 1000, 1),
            "p50": round(statistics.median(times), 2),
            "p95": round(times[int(0.95 * (len(times) - 1))], 2),
        },
        "goals": {"register_s": 2.0, "search_p95_ms": 5.0},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=5000)
    print(json.dumps(main(parser.parse_args().flows), indent=2))
