#!/usr/bin/env python
"""Write the key tables of docs/trace-format.md from the schema (trpo_ref.oracle.schema.FIELDS).

    python scripts/make_trace_docs.py

tests/test_oracle.py checks that the page holds exactly these tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from mdblock import write_marked_block  # noqa: E402

from trpo_ref.oracle.schema import markdown_table  # noqa: E402


def main() -> int:
    page = ROOT / "docs" / "trace-format.md"
    write_marked_block(page, "schema-inputs", markdown_table("input"), "## Inputs")
    write_marked_block(page, "schema-outputs", markdown_table("output"), "## Outputs")
    print(f"wrote the schema tables of {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
