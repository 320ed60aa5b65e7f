"""Outcomes a test of something other than the load generator accepts for a real call."""

MEASURED = ("completed", "invalid:generator_overloaded")
"""The call ran and was measured. On a busy machine (a shared CI runner) the client may be late
for every figure of a short call, which sets the call apart as the load generator's fault
(docs/metrics.md): a test about, say, the run folder or the concurrency must not fail for it.
Tests of the measurements themselves retry until their figures stand instead."""
