"""What the wheel installs: every package of the layout under fleetcap., and nothing else."""

from __future__ import annotations

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_package_of_the_layout_installs_under_fleetcap_and_tooling_does_not():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert sorted(config["packages"]) == sorted(found)
    assert all(p == "fleetcap" or p.startswith("fleetcap.") for p in config["packages"])
    assert {"deploy", "tests", "bench"}.isdisjoint(p.split(".")[0] for p in config["packages"])
    assert config["package-data"]["fleetcap"] == ["py.typed"]
