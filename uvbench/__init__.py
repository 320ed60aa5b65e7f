"""uvbench: batch evaluation and load testing for voice agents on the Ultravox Realtime API."""

__version__ = "0.1.0"
