"""Printing a result as az does: json, jsonc, yaml, yamlc, table, tsv or none, after --query."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fleetcap.clients.cli.common import has, optional
from fleetcap.core import logs

OUTPUTS = ("json", "jsonc", "yaml", "yamlc", "table", "tsv", "none")


class QueryError(ValueError):
    """--query is not valid JMESPath."""


def emit(data: Any, args: argparse.Namespace, table: list[tuple[str, str]] | None = None) -> None:
    """Prints a result as az does. json/jsonc (colored on a terminal) and yaml/yamlc: the whole
    object. table: the table's columns under a header; tsv: the same columns without a header,
    tab-separated, for `cut` and shell loops. none: nothing. --query (JMESPath) is applied first;
    a table of a query's result takes its columns from the result."""
    output, query = args.output, getattr(args, "query", None)
    if query:
        jmespath = optional("jmespath", "--query")
        optional("jmespath.exceptions", "--query")
        try:
            data = jmespath.search(query, data)
        except jmespath.exceptions.JMESPathError as e:
            raise QueryError(f"--query: {e}") from None
        table = query_table(data) if output in ("table", "tsv") else None
    if output == "none":
        return
    if output in ("json", "jsonc") or (table is None and output in ("table", "tsv")):
        text = json.dumps(data, indent=2)
        if output == "jsonc" and sys.stdout.isatty() and has("rich"):
            from rich.console import Console

            Console().print_json(text)
        else:
            print(text)
        return
    if output in ("yaml", "yamlc"):
        yaml = optional("yaml", f"-o {output}")
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        if output == "yamlc" and sys.stdout.isatty() and has("rich"):
            from rich.console import Console
            from rich.syntax import Syntax

            Console().print(Syntax(text, "yaml"))
        else:
            print(text, end="")
        return
    assert table is not None
    rows = data if isinstance(data, list) else [data]
    if output == "tsv":
        for r in rows:
            print("\t".join(cell(get_path(r, path)) for _, path in table))
        return
    cols = [(h, [cell(get_path(r, path)) for r in rows]) for h, path in table]
    widths = [max([len(h)] + [len(v) for v in vals]) for h, vals in cols]
    print("  ".join(h.ljust(w) for (h, _), w in zip(cols, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for i in range(len(rows)):
        print("  ".join(vals[i].ljust(w) for (_, vals), w in zip(cols, widths)).rstrip())


def cell(value: Any) -> str:
    """A value for a terminal: text that agents and callers chose (a hostname, an interface, an
    error) has its control characters escaped, so it can neither move the cursor nor recolour
    the screen nor break a table's or tsv's columns."""
    return logs.escape_control(str(value))


def query_table(data: Any) -> list[tuple[str, str]]:
    """The columns of a query's result, as az's table: a dict's (or the first dict's) keys, or one
    column "Result" for scalars."""
    first = data[0] if isinstance(data, list) and data else data
    if isinstance(first, dict):
        return [(k[:1].upper() + k[1:], k) for k in first]
    return [("Result", "")]


def get_path(d: Any, path: str) -> Any:
    if not path:  # a scalar row (a query's result)
        return d
    for part in path.split("."):
        d = d.get(part, "") if isinstance(d, dict) else ""
    return d
