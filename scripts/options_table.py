"""Print the options of trainSpeakerNet.py / trainSpeakerNet_Eval.py as a Markdown table.

The README's options table is this script's output (a test keeps the two in step):
    python scripts/options_table.py
"""
from __future__ import annotations

from utils.options import OPTIONS


def options_table() -> str:
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for opt in OPTIONS:
        meaning = opt.help.replace("|", "\\|")
        rows.append(f"| `--{opt.name}` | `{opt.default}` | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(options_table())
