"""``python -m liveview``: the live terminal view of the suite."""
