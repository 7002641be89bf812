"""The options page is the option system's own output: the two cannot drift apart."""
import os

from scripts.options_table import options_page

OPTIONS_PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "options.md")


def test_options_page_is_current():
    with open(OPTIONS_PAGE, encoding="utf-8") as handle:
        assert handle.read() == options_page(), \
            "docs/options.md is stale: run `python scripts/options_table.py --output docs/options.md`"
