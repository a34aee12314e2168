"""The committed generated code must be exactly what `make protos` produces."""

from __future__ import annotations

import filecmp
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(ROOT / "protos") for p in (ROOT / "protos" / "fleetcap").rglob("*_pb2*") if p.suffix in (".py", ".pyi")
    )
    assert generated == committed
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, ROOT / "protos" / p, shallow=False)]
    assert stale == [], f"regenerate with 'make protos': {stale}"
