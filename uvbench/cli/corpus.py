"""`uvbench corpus synth|annotate|noise`: make and annotate audio clips for scenarios, and
rebuild the shipped background noises."""

from __future__ import annotations

import argparse
from pathlib import Path

from uvbench.cli.common import EXIT_OK, UsageError


def add_parser(sub) -> None:
    corpus = sub.add_parser("corpus", help="make and annotate audio clips for scenarios")
    corpus_sub = corpus.add_subparsers(dest="corpus_command", required=True)
    synth = corpus_sub.add_parser(
        "synth", help="synthesize a clip and record its speech bounds in manifest.json"
    )
    synth.add_argument("text", help="what the clip says")
    synth.add_argument("-o", "--output", type=Path, required=True, help="the clip to write (.wav or .flac)")
    synth.add_argument("--rate", type=int, default=16000, help="sample rate in Hz (default 16000)")
    synth.add_argument("--wpm", type=int, default=175, help="speaking rate, words per minute")
    synth.add_argument("--voice", default="en-us", help="eSpeak NG voice (default en-us)")
    annotate = corpus_sub.add_parser(
        "annotate", help="find the speech bounds of recordings, into manifest.json"
    )
    annotate.add_argument("paths", nargs="+", type=Path, help="audio files to annotate")
    annotate.add_argument("--manifest-dir", type=Path, default=None, help="where the manifest goes")
    annotate.add_argument("--threshold-db", type=float, default=-45.0, help="speech level threshold, dBFS")
    noise = corpus_sub.add_parser(
        "noise", help="regenerate the shipped background noises and their manifest (audio_corpus/noise/)"
    )
    noise.add_argument(
        "-o", "--output", type=Path, default=None, help="folder to write (default audio_corpus/noise/)"
    )
    corpus.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from uvbench.audio.corpus_commands import CorpusError, annotate, synth
    from uvbench.audio.source import AudioFileError

    if args.corpus_command == "noise":
        return _noise(args.output)
    try:
        if args.corpus_command == "synth":
            clip = synth(args.text, args.output, sample_rate=args.rate, wpm=args.wpm, voice=args.voice)
            bounds = f"speech {clip.speech_start_s:.3f}-{clip.speech_end_s:.3f} s"
            print(f"{args.output}: {clip.duration_s:.2f} s, {bounds}")
        else:
            for clip in annotate(args.paths, manifest_dir=args.manifest_dir, threshold_db=args.threshold_db):
                print(f"{clip.file}: speech {clip.speech_start_s:.3f}-{clip.speech_end_s:.3f} s")
    except (CorpusError, AudioFileError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def _noise(output: Path | None) -> int:
    # Nothing is spoken before this in the command's process, which babble and café need to
    # reproduce the shipped files (uvbench.audio.noise explains why).
    from uvbench.audio.noise import NOISE_DIR, build_noise_corpus
    from uvbench.audio.tts import SynthesisError

    folder = output if output is not None else NOISE_DIR
    try:
        noises = build_noise_corpus(folder)
    except SynthesisError as exc:
        raise UsageError(f"cannot synthesize the babble: {' '.join(str(exc).split())}") from None
    except (OSError, RuntimeError) as exc:  # libsndfile's write errors are RuntimeErrors
        reason = getattr(exc, "strerror", None) or getattr(exc, "error_string", None) or exc
        raise UsageError(
            f"cannot write the noises to {folder}: {reason}; choose a folder you can write to"
        ) from None
    for noise in noises:
        size_kb = noise.path.stat().st_size // 1024
        print(f"{noise.path}: {noise.duration_s:.1f} s, {noise.rms_dbfs:g} dBFS, {size_kb} KB")
    return EXIT_OK
