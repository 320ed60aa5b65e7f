"""Caller audio transforms on synthetic signals: SNR, band, G.711 tables, timing, streaming, limits."""

from __future__ import annotations

import numpy as np
import pytest

from uvbench.audio.transforms import (
    Chain,
    Codec,
    Gain,
    Noise,
    Reverb,
    Telephone,
    g711_roundtrip,
    speech_rms,
)

RATES = (8000, 16000, 44100, 48000)


def _db(a: float, b: float) -> float:
    return 20 * np.log10(max(a, 1e-12) / b)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def _clip(rate: int, seconds: float = 3.0, amplitude: float = 0.05) -> tuple[np.ndarray, int, int]:
    """Silence, a 440 Hz tone between 0.5 s and 2.5 s (the speech bounds), silence; as int16."""
    n = int(seconds * rate)
    start, end = rate // 2, int(2.5 * rate)
    x = np.zeros(n)
    t = np.arange(end - start) / rate
    x[start:end] = amplitude * np.sin(2 * np.pi * 440 * t)
    return np.round(x * 32768).astype(np.int16), start, end


def _white(seconds: float, rate: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * rate))


def _tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


# -- noise ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 30.0])
def test_snr_measured_back_within_half_a_db(rate, snr):
    pcm, start, end = _clip(rate)
    chain = Chain((Noise(snr, samples=_white(2.0, 16000), sample_rate=16000),))
    level = speech_rms([(pcm, start, end)])
    clean = chain.apply_clip(pcm, rate)
    stream = chain.stream(rate, level)
    mixed = stream.process(clean)
    noise = mixed.astype(np.float64) - clean
    speech = pcm[start:end].astype(np.float64)
    assert stream.clipped == 0
    assert abs(_db(_rms(speech), _rms(noise)) - snr) < 0.5
    # The noise runs over the silences too, at the same level.
    assert abs(_db(_rms(noise[: rate // 2]), _rms(noise)) < 1.0)


def test_snr_is_against_the_speech_as_it_reaches_the_noise():
    rate = 16000
    pcm, start, end = _clip(rate)
    chain = Chain((Gain(-6), Noise(10, samples=_white(2.0, rate), sample_rate=rate)))
    level = speech_rms([(chain.before_noise(pcm, rate), start, end)])
    clean = chain.apply_clip(pcm, rate)
    noise = chain.stream(rate, level).process(clean).astype(np.float64) - clean
    assert abs(_db(_rms(clean[start:end]), _rms(noise)) - 10) < 0.5


def test_speech_rms_pools_clips_over_their_bounds():
    a = np.zeros(100)
    a[10:20] = 0.5
    b = np.zeros(50)
    b[0:30] = 0.1
    expected = np.sqrt((10 * 0.25 + 30 * 0.01) / 40)
    assert speech_rms([(a, 10, 20), (b, 0, 30)]) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"speech bounds \[40, 60\) do not fit a clip of 50 samples"):
        speech_rms([(b, 40, 60)])


def test_noise_loop_wraps_without_a_seam():
    rate = 8000
    # 2.3 periods of a 1 Hz-ish sine: played as is, the wrap would jump by most of the amplitude.
    source = np.sin(2 * np.pi * np.arange(int(2.3 * rate)) / (rate / 1.0))
    loop = Noise(20, samples=source, sample_rate=rate).loop(rate)
    seam = abs(loop[0] - loop[-1])
    inside = np.max(np.abs(np.diff(loop)))
    assert seam <= 1.5 * inside
    assert _rms(loop) == pytest.approx(1.0)


def test_stream_chunked_equals_whole_and_wraps_the_loop():
    rate = 16000
    chain = Chain((Noise(0, samples=_white(0.5, rate), sample_rate=rate), Telephone("ulaw")))
    silence = np.zeros(3 * rate, dtype=np.int16)  # six loop periods: the bed wraps several times
    whole = chain.stream(rate, 0.05).process(silence)
    stream = chain.stream(rate, 0.05)
    chunked = np.concatenate([stream.process(silence[i : i + 320]) for i in range(0, silence.size, 320)])
    np.testing.assert_array_equal(whole, chunked)
    assert _rms(whole) > 0
    # A chunk longer than the loop still reads the bed in order.
    long = chain.stream(rate, 0.05).process(np.zeros(rate, dtype=np.int16))
    np.testing.assert_array_equal(long, whole[:rate])


def test_the_integer_mix_is_the_rounded_float_sum_and_silence_is_the_bed_itself():
    from uvbench.audio.transforms import loop_start

    rate, snr, level, seed = 16000, 6, 0.1, 2
    noise = Noise(snr, samples=_white(0.5, rate), sample_rate=rate, seed=seed)
    chain = Chain((noise,))
    speech = np.random.default_rng(5).normal(0, 6000, 2 * rate).clip(-32768, 32767).astype(np.int16)
    # The float mix, written out: the bed at its SNR from its seeded start, added, rounded, clipped.
    bed = noise.loop(rate) * (level / 10 ** (snr / 20)) * 32768
    at = np.arange(speech.size) + loop_start(seed, bed.size)
    float_sum = speech + bed[at % bed.size]
    assert not np.any(np.abs(float_sum - np.floor(float_sum) - 0.5) < 1e-9)  # no exact halves here
    expected = np.clip(np.round(float_sum), -32768, 32767).astype(np.int16)
    stream = chain.stream(rate, level)
    np.testing.assert_array_equal(stream.process(speech), expected)
    rounded = np.round(float_sum)
    assert stream.clipped == int(np.count_nonzero((rounded > 32767) | (rounded < -32768)))
    # A silent chunk takes the int16 bed as is: the same samples as mixing zeros, in any chunking.
    a, b = chain.stream(rate, level), chain.stream(rate, level)
    by_silence = np.concatenate([a.silence(320) for _ in range(100)])
    by_mix = np.concatenate([b.process(np.zeros(320, dtype=np.int16)) for _ in range(100)])
    np.testing.assert_array_equal(by_silence, by_mix)
    assert a.position == b.position


def test_a_composer_with_a_room_sends_the_bed_in_its_silences_and_the_mix_under_speech():
    from uvbench.audio.pacer import Composer

    rate = 16000
    chain = Chain((Noise(10, samples=_white(0.5, rate), sample_rate=rate, seed=1),))
    clip = np.random.default_rng(3).normal(0, 3000, 1000).astype(np.int16)  # not a whole chunk
    composer = Composer(320, stream=chain.stream(rate, 0.1))
    sent = []
    for k in range(12):
        if k == 3:
            composer.enqueue(clip)
        sent.append(composer.chunk(k))
    plain = np.zeros(12 * 320, dtype=np.int16)
    plain[960 : 960 + clip.size] = clip
    expected = chain.stream(rate, 0.1).process(plain)
    np.testing.assert_array_equal(np.frombuffer(b"".join(sent), dtype=np.int16), expected)


def test_noise_is_deterministic_and_seeded():
    rate = 16000
    noise = _white(1.0, rate)
    a = Chain((Noise(10, samples=noise, sample_rate=rate, seed=3),)).stream(rate, 0.1).process(np.zeros(800))
    b = Chain((Noise(10, samples=noise, sample_rate=rate, seed=3),)).stream(rate, 0.1).process(np.zeros(800))
    c = Chain((Noise(10, samples=noise, sample_rate=rate, seed=4),)).stream(rate, 0.1).process(np.zeros(800))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_from_a_file(tmp_path):
    import soundfile

    path = tmp_path / "bed.wav"
    soundfile.write(str(path), (_white(1.0, 22050) * 32768).astype(np.int16), 22050)
    chain = Chain((Noise(20, file=str(path)),))
    out = chain.stream(16000, 0.1).process(np.zeros(16000))
    assert abs(_db(0.1, _rms(out / 32768)) - 20) < 0.5


def test_chain_without_noise_streams_unchanged():
    pcm, _, _ = _clip(16000)
    chain = Chain((Gain(-3),))
    clean = chain.apply_clip(pcm, 16000)
    np.testing.assert_array_equal(chain.stream(16000, 0.1).process(clean), clean)


# -- telephone band and G.711 --------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 22050, 48000])
@pytest.mark.parametrize("codec", [None, "ulaw", "alaw"])
def test_telephone_band_limits(rate, codec):
    chain = Chain((Telephone(codec),))
    middle = slice(rate // 4, 3 * rate // 4)  # away from the edges' transients

    def gain(freq):
        x = _tone(freq, rate)
        return _db(_rms(chain.apply_clip(x, rate)[middle] / 32768), _rms(x[middle]))

    assert gain(100) <= -20
    assert gain(6000) <= -20
    assert abs(gain(1000)) <= 1


def test_telephone_at_8k_keeps_the_band():
    chain = Chain((Telephone(None),))
    x = _tone(100, 8000)
    assert _db(_rms(chain.apply_clip(x, 8000)[2000:6000] / 32768), _rms(x[2000:6000])) <= -20


# ITU-T G.711 tables, in the 16-bit scale audioop uses (the standard's 13/14-bit values shifted).
ULAW_ENCODE = [(0, 0xFF), (32767, 0x80), (-32768, 0x00), (132, 0xEF), (-132, 0x6F), (396, 0xDF)]
ULAW_DECODE = [(0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124), (0xEF, 132), (0xDF, 396), (0xF0, 120)]
ALAW_ENCODE = [(0, 0xD5), (32767, 0xAA), (-32768, 0x2A), (264, 0xC5), (528, 0xF5)]
ALAW_DECODE = [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xC5, 264), (0xF5, 528)]


def _codes(encode, values):
    return list(encode(np.array(values, dtype=np.int16).tobytes(), 2))


def _values(decode, codes):
    return list(np.frombuffer(decode(bytes(codes), 2), dtype=np.int16))


def test_ulaw_against_the_g711_table():
    from uvbench.audio.transforms import audioop

    assert _codes(audioop.lin2ulaw, [v for v, _ in ULAW_ENCODE]) == [c for _, c in ULAW_ENCODE]
    assert _values(audioop.ulaw2lin, [c for c, _ in ULAW_DECODE]) == [v for _, v in ULAW_DECODE]
    # The round trip lands on the table's decoded values.
    back = g711_roundtrip(np.array([0, 132, 396, -132, 32767]) / 32768, "ulaw") * 32768
    assert list(back) == [0, 132, 396, -132, 32124]


def test_alaw_against_the_g711_table():
    from uvbench.audio.transforms import audioop

    assert _codes(audioop.lin2alaw, [v for v, _ in ALAW_ENCODE]) == [c for _, c in ALAW_ENCODE]
    assert _values(audioop.alaw2lin, [c for c, _ in ALAW_DECODE]) == [v for _, v in ALAW_DECODE]
    back = g711_roundtrip(np.array([0, 264, 528, 32767]) / 32768, "alaw") * 32768
    assert list(back) == [8, 264, 528, 32256]


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
def test_g711_keeps_a_tone_clean(codec):
    x = _tone(1000, 8000)
    y = g711_roundtrip(x, codec)
    assert _db(_rms(x), _rms(y - x)) > 30  # G.711 gives ~38 dB SNR on a loud tone


# -- timing: speech bounds never move ------------------------------------------------------------


def _burst(rate: int, at: int) -> np.ndarray:
    x = np.zeros(rate)
    n = rate // 40
    x[at : at + n] = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(n) / rate)
    return x


def _onset(y: np.ndarray) -> int:
    env = np.abs(y.astype(np.float64))
    return int(np.argmax(env > 0.25 * env.max()))


CHAINS = [
    Chain((Gain(-6),)),
    Chain((Telephone("ulaw"),)),
    Chain((Telephone("alaw"),)),
    Chain((Codec("gsm"),)),
    Chain((Codec("mp3", 4),)),
    Chain((Reverb(0.7, 0.3),)),
    Chain((Reverb(0.5, 0.2), Gain(3), Telephone("ulaw"), Codec("gsm"))),
]


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: c.label)
def test_chain_keeps_length_and_onset(chain, rate):
    at = int(0.4 * rate)
    x = _burst(rate, at)
    y = chain.apply_clip(x, rate)
    assert y.size == x.size
    assert y.dtype == np.int16
    # Within 1.5 ms: resampling, the zero-phase band filter and GSM's frames smear the onset a
    # little (both ways), they never delay it.
    assert abs(_onset(y) - _onset(x)) <= rate * 3 // 2000


def test_noise_never_changes_the_clip():
    rate = 16000
    pcm, _, _ = _clip(rate)
    chain = Chain((Noise(5, samples=_white(1.0, rate), sample_rate=rate),))
    np.testing.assert_array_equal(chain.apply_clip(pcm, rate), pcm)


def test_same_input_same_output():
    rate = 16000
    x = _burst(rate, 4000) + _white(1.0, rate, seed=7) * 0.1
    chain = CHAINS[-1]
    np.testing.assert_array_equal(chain.apply_clip(x, rate), chain.apply_clip(x, rate))


# -- clipping ------------------------------------------------------------------------------------


def test_clipping_is_counted_on_the_clip_side():
    x = _tone(440, 16000, amplitude=0.5)
    rendered = Chain((Gain(12),)).render_clip(x, 16000)
    scaled = np.round(x * 10 ** (12 / 20) * 32768)
    assert rendered.clipped == int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
    assert rendered.clipped > 0
    assert rendered.pcm.max() == 32767 and rendered.pcm.min() == -32768
    assert Chain((Gain(-12),)).render_clip(x, 16000).clipped == 0


def test_clipping_is_counted_on_the_stream_side():
    rate = 16000
    loud = np.full(rate, 32000, dtype=np.int16)
    stream = Chain((Noise(-10, samples=_white(1.0, rate), sample_rate=rate),)).stream(rate, 0.5)
    out = np.concatenate([stream.process(loud[i : i + 320]) for i in range(0, rate, 320)])
    assert stream.clipped == int(np.count_nonzero((out == 32767) | (out == -32768))) > 0


# -- specs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Gain(25), r"^gain 25 dB is outside -40\.\.20 dB$"),
        (lambda: Gain(float("nan")), r"^gain must be a number"),
        (
            lambda: Noise(70, samples=np.ones(8000), sample_rate=8000),
            r"^noise snr 70 dB is outside -10\.\.60 dB$",
        ),
        (lambda: Noise(10), r"^noise needs exactly one of file or samples$"),
        (lambda: Noise(10, samples=np.ones(8000)), r"^noise samples need their sample_rate$"),
        (lambda: Noise(10, samples=np.ones(10), sample_rate=8000), r"shorter than 0\.1 s"),
        (lambda: Noise(10, samples=np.ones(8000), sample_rate=4000), r"outside 8000\.\.48000 Hz"),
        (lambda: Telephone("g722"), r"^telephone codec 'g722' is not one of 'ulaw', 'alaw' or none$"),
        (lambda: Codec("opus"), r"^codec 'opus' is not one of 'gsm', 'mp3'$"),
        (lambda: Codec("mp3", 12), r"^mp3 vbr_quality 12 is outside 0\.\.9$"),
        (lambda: Codec("gsm", 3), r"^codec gsm has one bitrate"),
        (lambda: Reverb(1.5, 0.2), r"^reverb room_size 1\.5 is outside 0\.\.1$"),
        (lambda: Reverb(0.5, -0.1), r"^reverb wet -0\.1 is outside 0\.\.1$"),
        (
            lambda: Chain((Noise(1, file="a.wav"), Noise(2, file="b.wav"))),
            r"^a chain mixes at most one noise",
        ),
        (lambda: Chain(("gain",)), r"^chain item 'gain' is not a transform$"),
        (lambda: Noise(1, file="/nonexistent/x.wav").source(), r"^noise file /nonexistent/x\.wav does not"),
        (lambda: Chain((Noise(1, file="x.wav"),)).stream(16000, 0.0), r"must be above zero"),
    ],
)
def test_validation_messages(make, message):
    with pytest.raises(ValueError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_labels():
    chain = Chain(
        (
            Reverb(0.5, 0.3),
            Noise(10, file="x.wav"),
            Gain(-3),
            Telephone("ulaw"),
            Codec("gsm"),
            Codec("mp3", 5),
        )
    )
    assert [t.label for t in chain.transforms] == [
        "reverb=0.5/0.3",
        "snr=10dB",
        "gain=-3dB",
        "ulaw",
        "gsm-fr",
        "mp3-v5",
    ]
    assert chain.label == "reverb=0.5/0.3+snr=10dB+gain=-3dB+ulaw+gsm-fr+mp3-v5"
    assert Chain().label == "clean"
    assert Telephone(None).label == "phone-band"
