"""Partial faults under load: slow and lossy links (a shaping proxy), the spool's disk full, and
test hosts partitioned in network namespaces.

``pytest -m faults tests/faults`` runs them on one shared suite and writes
``var/faults-results.json``; ``python -m tests.faults.report`` renders it into docs/RELIABILITY.md.
"""
