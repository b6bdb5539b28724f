"""Fault injection under sustained load, audited against the tester's ledger.

``pytest -m chaos tests/chaos`` runs the scenarios on one shared suite and writes
``var/chaos-results.json``; ``python -m tests.chaos.report`` renders it into docs/RELIABILITY.md.
"""
