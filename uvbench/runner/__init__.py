"""Running scenarios: one call after another here; fan-out, load profiles and workers build on it."""
