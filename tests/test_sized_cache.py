"""The speech caches are bounded by the bytes they hold, not by how many texts they keep."""

from __future__ import annotations

from uvbench.audio import tts
from uvbench.audio.sized_cache import SizedLru


def test_least_recently_used_values_go_first_until_the_bytes_fit() -> None:
    cache: SizedLru[bytes] = SizedLru(10, len)
    made: list[str] = []

    def make(key: str, size: int):
        return lambda: made.append(key) or b"x" * size

    cache.get_or_make("a", make("a", 4))
    cache.get_or_make("b", make("b", 4))
    cache.get_or_make("a", make("a", 4))  # a hit: made once, now the most recent
    cache.get_or_make("c", make("c", 4))  # 12 bytes: b, the least recently used, goes
    assert made == ["a", "b", "c"] and cache.bytes == 8 and len(cache) == 2
    cache.get_or_make("a", make("a", 4))
    cache.get_or_make("b", make("b", 4))
    assert made == ["a", "b", "c", "b"]
    huge = cache.get_or_make("huge", make("huge", 11))  # over the whole budget: handed out, not kept
    assert len(huge) == 11 and cache.bytes <= 10
    cache.get_or_make("huge", make("huge", 11))
    assert made.count("huge") == 2


def test_speech_of_many_long_texts_stays_within_the_budget(monkeypatch) -> None:
    cache: SizedLru[tts.Speech] = SizedLru(3 * 2**20, lambda speech: speech.pcm.nbytes)
    monkeypatch.setattr(tts, "_CACHE", cache)
    text = "a longer sentence the agent might say, " * 8
    for n in range(12):  # each about half a MB at 48 kHz: twelve would be six MB
        speech = tts.synthesize(f"{text} {n}", 48000)
        assert speech.pcm.nbytes > 2**18
    assert cache.bytes <= 3 * 2**20 and 0 < len(cache) < 12
    assert tts.synthesize(f"{text} 11", 48000) is tts.synthesize(f"{text} 11", 48000)  # the newest is kept
