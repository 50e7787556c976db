"""The dashboard's TypeScript types cannot drift from the metric schema (llm/telemetry/schema.py).

dashboard/src/types/metric-event.schema.json is what `python -m llm.telemetry.schema` prints, and
dashboard/src/types/schema.ts is what json-schema-to-typescript makes of it (`npm run gen:types`, i.e.
dashboard/scripts/gen-types.mjs). After changing the schema, regenerate both:

    .venv/bin/python -m llm.telemetry.schema > dashboard/src/types/metric-event.schema.json
    (cd dashboard && npm run gen:types)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboard"
TYPES = DASHBOARD / "src" / "types"
SCHEMA_JSON = TYPES / "metric-event.schema.json"
SCHEMA_TS = TYPES / "schema.ts"
PROTOCOL_TS = TYPES / "protocol.ts"
REGENERATE = (
    "regenerate: .venv/bin/python -m llm.telemetry.schema > dashboard/src/types/metric-event.schema.json"
    " && (cd dashboard && npm run gen:types)"
)


def test_committed_json_schema_is_what_python_prints_now() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "llm.telemetry.schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert SCHEMA_JSON.read_text() == printed, f"{SCHEMA_JSON.relative_to(ROOT)} is stale; {REGENERATE}"


def test_committed_typescript_types_are_generated_from_the_json_schema(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot regenerate dashboard/src/types/schema.ts")
    if not (DASHBOARD / "node_modules" / "json-schema-to-typescript").is_dir():
        pytest.skip("dashboard/node_modules is missing: run `make dashboard` first")
    regenerated = tmp_path / "schema.ts"
    subprocess.run(
        [node, "scripts/gen-types.mjs", str(SCHEMA_JSON), str(regenerated)],
        cwd=DASHBOARD,
        capture_output=True,
        text=True,
        check=True,
    )
    assert regenerated.read_text() == SCHEMA_TS.read_text(), (
        f"{SCHEMA_TS.relative_to(ROOT)} is stale; {REGENERATE}"
    )


def test_every_record_type_has_its_protocol_type() -> None:
    """A new event type in the schema must be named in protocol.ts's MetricRecord union too."""
    schema = json.loads(SCHEMA_JSON.read_text())
    schema_types = set(schema["discriminator"]["mapping"])
    protocol = PROTOCOL_TS.read_text()
    declared = set(re.findall(r"Event & \{ type: '(\w+)' \}", protocol))
    assert declared == schema_types, (
        f"protocol.ts declares {sorted(declared)}, the schema has {sorted(schema_types)}"
    )
    union = protocol.split("export type MetricRecord =", 1)[1].split("\n\n", 1)[0]
    for event_type in schema_types:
        alias = re.search(rf"export type (\w+) = \w+ & \{{ type: '{event_type}' \}}", protocol)
        assert alias is not None and alias.group(1) in union, f"{event_type} is not in MetricRecord"
