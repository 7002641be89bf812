"""Utilities every layer uses; they import nothing else of the project.

Error types and the entry-point convention (``errors``, ``cli``), the option system (``options``),
atomic file writes (``atomic``), checkpoint files (``checkpoints``), process-group helpers
(``distributed``), ``--device`` resolution (``device``), progress reporting (``progress``), JSON run
records (``records``), done-markers of resumable steps (``steps``), text inputs (``textfile``) and
checked downloads into a cache (``download``).
"""
