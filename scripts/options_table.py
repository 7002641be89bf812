"""Print the options of trainSpeakerNet.py / trainSpeakerNet_Eval.py as a Markdown table.

The README's options table is this script's output (a test keeps the two in step):
    python scripts/options_table.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from options import OPTIONS  # noqa: E402


def options_table() -> str:
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for opt in OPTIONS:
        meaning = opt.help.replace("|", "\\|")
        rows.append(f"| `--{opt.name}` | `{opt.default}` | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(options_table())
