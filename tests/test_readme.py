"""The README's options table is the option system's own output: the two cannot drift apart."""
import os

from scripts.options_table import options_table

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_options_table_is_current():
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    assert options_table() in text, "README options table is stale: paste `python scripts/options_table.py`"
