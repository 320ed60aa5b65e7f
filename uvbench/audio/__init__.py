"""Audio for uvbench, all offline.

tts: speech synthesis with eSpeak NG (`synthesize` -> `Speech`); bounds: exact speech bounds of
a clean clip (`speech_bounds`); corpus: the committed clips in audio_corpus/ (`load_manifest`,
`load_clip_pcm`); make_corpus: rebuilds them; pcm: shared int16/float/resampling helpers.
"""
