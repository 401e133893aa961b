"""The `cartpulse` command (``main.py``) and what only it uses: the event generator, file import."""
