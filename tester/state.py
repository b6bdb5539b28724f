"""Everything the tester's endpoints and callback loop share, built once at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random

from tester.knobs import Knobs
from tester.ledger import Ledger
from tester.metrics import TesterMetrics
from tester.settings import TesterSettings
from tester.stats import CallbackStats, ObjectStats


@dataclass
class TesterState:
    settings: TesterSettings
    knobs: Knobs
    ledger: Ledger
    # Two streams, so a seeded run sends the same callbacks however many status requests arrive.
    callback_rng: Random
    object_rng: Random
    objects: ObjectStats = field(default_factory=ObjectStats)
    callbacks: CallbackStats = field(default_factory=CallbackStats)
    metrics: TesterMetrics = field(default_factory=TesterMetrics)

    @classmethod
    def from_settings(cls, settings: TesterSettings) -> TesterState:
        seed = settings.tester_seed
        return cls(
            settings=settings,
            knobs=Knobs.from_settings(settings),
            ledger=Ledger(settings.tester_ledger_size),
            # Seedable, reproducible test traffic; nothing secret is drawn from these.
            callback_rng=Random(None if seed is None else f"{seed}/callbacks"),  # noqa: S311 - test traffic, not secrets
            object_rng=Random(None if seed is None else f"{seed}/objects"),  # noqa: S311 - test traffic, not secrets
        )
