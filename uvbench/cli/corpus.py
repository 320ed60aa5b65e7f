"""`uvbench corpus synth|annotate`: make and annotate audio clips for scenarios."""

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
    corpus.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from uvbench.audio.corpus_commands import CorpusError, annotate, synth
    from uvbench.audio.source import AudioFileError

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
