"""Timeline -> figures: per turn, per barge-in and per call (docs/metrics.md is the contract).

`compute(timeline)` is a pure function of a call's timeline; `GLOSSARY` gives every figure's
anchor, end point and unit.
"""

from uvbench.metrics.call import (
    CALL_METRICS,
    GLOSSARY,
    INTERRUPT_METRICS,
    TURN_METRICS,
    CallMetrics,
    compute,
)

__all__ = ["CALL_METRICS", "GLOSSARY", "INTERRUPT_METRICS", "TURN_METRICS", "CallMetrics", "compute"]
