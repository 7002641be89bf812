"""The loop driver of run_rounds.py: its steps (``steps``), the plan of the rounds (``plan``), the round table
(``report``) and the command line (``cli``). Runs the entry points as subprocesses; imports ``utils``,
``clustering``, ``training`` and (for ``--demo``) ``demo``.
"""
