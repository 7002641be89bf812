"""Utilities every layer uses; they import nothing else of the project.

Error types and the entry-point convention (``errors``, ``cli``), the option system (``options``),
atomic file writes (``atomic``), checkpoint files (``checkpoints``), process-group helpers
(``distributed``), ``--device`` resolution (``device``), progress reporting (``progress``) and
checked downloads into a cache (``download``).
"""
