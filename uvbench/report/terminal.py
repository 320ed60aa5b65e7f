"""The readable summary of a call printed as it finishes."""

from __future__ import annotations

from typing import Any


def _ms(value: Any) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _set_apart(item: dict[str, Any], lead: str = "  SET APART: ") -> str:
    """`lead` + "<figures> (<reason>)" for a turn, barge-in or call with figures set apart, else ""."""
    apart = item.get("set_apart") or {}
    if not apart:
        return ""
    by_reason: dict[str, list[str]] = {}
    for name, entry in apart.items():
        by_reason.setdefault(str(entry.get("reason")), []).append(name.split(".", 1)[1].removesuffix("_ms"))
    text = "; ".join(f"{', '.join(names)} ({reason})" for reason, names in by_reason.items())
    late = item.get("anchor_lateness_ms")
    if "anchor_late" in by_reason and isinstance(late, float):
        text += f", anchor {late:.1f} ms late"
    return lead + text


def call_summary(record: dict[str, Any], folder: str) -> str:
    m = record.get("metrics", {})
    status = "completed" if record["passed"] else record["outcome"]
    head = f"{record['scenario']}  call {record.get('call_id') or '—'}  {status}"
    if record.get("end_reason"):
        head += f"  (end reason {record['end_reason']}, {(m.get('call.duration_ms') or 0) / 1000:.1f} s)"
    lines = [head]
    if record.get("outcome_detail") and not record["passed"]:
        lines.append(f"  why: {record['outcome_detail']}")
    for turn in record.get("turns", []):
        tm = turn["metrics"]
        if turn.get("missed"):
            lines.append(f"  turn {turn['index']}  MISSED (no reply heard)")
            continue
        lines.append(
            f"  turn {turn['index']}  ttfa {_ms(tm.get('turn.ttfa_ms'))}  ttfb {_ms(tm.get('turn.ttfb_ms'))}"
            f"  thinking {_ms(tm.get('turn.thinking_ms'))}  underflows {tm.get('turn.underflow_count', 0)}"
            + _set_apart(turn)
        )
    for b in record.get("barge_ins", []):
        bm = b["metrics"]
        verdict = {True: "stopped", False: "FAILED: kept talking", None: "nothing to interrupt"}[
            b.get("success")
        ]
        lines.append(
            f"  barge-in {b['index']}  clear {_ms(bm.get('interrupt.clear_ms'))}"
            f"  silence {_ms(bm.get('interrupt.silence_ms'))}"
            f"  talk-over {_ms(bm.get('interrupt.talk_over_ms'))}  {verdict}" + _set_apart(b)
        )
    rtt, p99 = m.get("call.ping_rtt_ms"), m.get("pacer.lateness_p99_ms")
    lines.append(
        f"  greeting {_ms(m.get('call.first_audio_ms'))} · create {_ms(m.get('call.create_ms'))}"
        f" · ping rtt {'—' if rtt is None else f'{rtt:.2f} ms'}"
        f" · max buffered {_ms(m.get('call.max_buffered_ms'))}"
        f" · underflows {m.get('call.underflow_count', 0)}"
        f" · pacer p99 {'—' if p99 is None else f'{p99:.2f} ms'}" + _set_apart(record, " · set apart: ")
    )
    checks = record.get("expectations", [])
    if checks:
        passed = sum(1 for c in checks if c["ok"])
        lines.append(f"  expect: {passed}/{len(checks)} passed")
        lines.extend(f"    ✗ {c['what']}: {c['detail']}" for c in checks if not c["ok"])
    lines.append(f"  → {folder}/{record['artifacts'].get('timeline', '').replace('.timeline.json', '.json')}")
    return "\n".join(lines)
