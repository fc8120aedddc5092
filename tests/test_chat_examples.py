"""The README's ChatOps section: every command it documents reaches the alias and action it
names, and its example answers are what the aliases render (devtools/chat_examples.py)."""

import os
import re

import pytest

import chat_examples as ce
from test_aliases import matching_aliases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALIASES = ce.load_aliases(ROOT)


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def chatops_section():
    text = readme()
    start = text.index("\n## ChatOps\n")
    return text[start:text.index("\n## ", start + 1)]


def commands_table():
    """[(command, example, action, what)] of the section's table."""
    rows = []
    for line in chatops_section().split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            rows.append(tuple(c.strip("`") for c in cells[:3]) + (cells[3],))
    return rows


def help_line(display):
    """An alias display as the table writes it: {{ tier }} -> <tier>."""
    return re.sub(r"{{\s*(\S+?)\s*}}", r"<\1>", display)


def test_readme_examples_are_what_the_aliases_render():
    expected = ce.render_block(ROOT)
    assert ce.readme_block(readme()) == expected, (
        "README's chat examples are stale: run python3 devtools/chat_examples.py --write")


def test_the_table_lists_every_alias_format_once():
    shown = sorted(r[0] for r in commands_table())
    displays = sorted(help_line(f["display"]) for a in ALIASES.values() for f in a["formats"])
    assert shown == displays


@pytest.mark.parametrize("row", commands_table(), ids=lambda r: r[1])
def test_each_row_runs_the_action_it_names(row):
    command, example, action, what = row
    assert example.startswith("!") and what
    names = matching_aliases(example[1:])
    assert len(names) == 1, names
    alias = ALIASES[names[0]]
    assert alias["action_ref"] == action
    formats = [f for f in alias["formats"] if help_line(f["display"]) == command]
    assert len(formats) == 1
    assert any(ce.extract(r, example[1:]) is not None for r in formats[0]["representation"]), \
        "the example is an instance of its row's command"
    assert ce.alias_execution(alias, example[1:])["parameters"]


def test_every_command_the_section_quotes_matches_one_alias():
    quoted = re.findall(r"`!(dialog [^`]+)`", chatops_section())
    assert len(quoted) >= len(commands_table()) + 5
    for command in quoted:
        assert len(matching_aliases(command)) == 1, command
