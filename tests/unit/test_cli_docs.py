"""docs/cli.md against the parser: every verb and every flag the doc names exists, and every
flag of every capture verb is in the doc. A flag added without its line, or a doc line for a flag
that is gone, fails here."""

from __future__ import annotations

import argparse
import pathlib
import re

import pytest

from fleetcap.clients.cli import globals_anywhere
from fleetcap.main import build_parser

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()


def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), {})


PARSER = globals_anywhere(build_parser())
CAPTURE = subparsers(subparsers(PARSER)["capture"])


def section(title: str) -> str:
    start = DOC.index(f"## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else None]


def fleetcap_column(text: str) -> list[str]:
    """The second cell of each table row."""
    return [
        row.split("|")[2].strip() for row in text.splitlines() if row.startswith("|") and not row.startswith("|---") and row.count("|") >= 4
    ]


def test_every_verb_the_doc_names_exists():
    verbs = [re.match(r"`([a-z -]+?)(?: --| \[|`)", cell).group(1) for cell in fleetcap_column(section("Verbs"))[1:]]
    assert len(verbs) >= 12
    top = subparsers(PARSER)
    for verb in verbs:
        group, _, name = verb.partition(" ")
        assert group in top and name in subparsers(top[group]), verb


def test_every_create_flag_the_doc_names_exists_and_every_one_is_named():
    create = CAPTURE["create"]
    text = section("`create` flags")
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", " ".join(fleetcap_column(text))))
    assert named - set(create._option_string_actions) == set()
    own = {o for a in create._actions if a.help != argparse.SUPPRESS for o in a.option_strings if o.startswith("--") and o != "--help"}
    missing = {o for o in own if f"`{o}`" not in DOC and f"{o} " not in DOC and f"{o}`" not in DOC}
    assert missing == set(), f"create flags not in docs/cli.md: {sorted(missing)}"


@pytest.mark.parametrize("verb", sorted(set(CAPTURE) - {"create"}))
def test_every_flag_of_every_other_verb_is_in_the_doc(verb):
    own = {
        o for a in CAPTURE[verb]._actions if a.help != argparse.SUPPRESS for o in a.option_strings if o.startswith("--") and o != "--help"
    }
    missing = {o for o in own if o not in DOC}
    assert missing == set(), f"capture {verb} flags not in docs/cli.md: {sorted(missing)}"


def test_the_global_flags_are_in_the_doc():
    own = {o for a in PARSER._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    assert {o for o in own if o not in DOC} == set()


def leaves(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    subs = subparsers(p)
    return [" ".join(path)] if not subs else [x for k, v in subs.items() for x in leaves(v, (*path, k))]


def test_every_command_has_examples_and_each_one_parses():
    import shlex

    from fleetcap.clients.cli import EXAMPLES

    assert sorted(EXAMPLES) == sorted(leaves(PARSER))
    for key, examples in EXAMPLES.items():
        assert examples, key
        for example in examples:
            argv = shlex.split(example.split(" | ")[0])
            assert argv[0] == "fleetcap", example
            args = PARSER.parse_args(argv[1:])  # exits 2 (fails the test) on a flag that does not exist
            command = PARSER
            for word in key.split():
                command = subparsers(command)[word]
            assert args.func is command.get_default("func"), example  # it runs the command it illustrates


def test_the_config_example_in_the_doc_applies(tmp_path):
    from fleetcap.clients.cli import apply_config

    example = section("The `fleetcap` command") if "## The `fleetcap` command" in DOC else DOC
    toml = re.search(r"```toml\n(.*?)```", example, re.S).group(1)
    (tmp_path / "f.toml").write_text(toml)
    argv = ["--config", str(tmp_path / "f.toml")]
    parser = globals_anywhere(build_parser())
    apply_config(parser, argv)
    agent = parser.parse_args([*argv, "agent"])
    assert (agent.coordinator, agent.vmss, agent.instance_id, agent.tls_ca) == (
        "coord.example:7771",
        "web",
        "3",
        "/etc/fleetcap/tls/ca.pem",
    )
    coord = parser.parse_args([*argv, "coordinator"])
    assert coord.etcd == "https://10.0.0.11:2379,https://10.0.0.12:2379"
    assert coord.log_format == "json"
    create = parser.parse_args([*argv, "capture", "create", "-n", "pc1", "--vm", "vm1"])
    assert (create.time_limit, create.coordinator) == (300, "coord.example:7770")
