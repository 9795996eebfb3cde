"""The text of every message the mirror sends, built from store rows.

Plain functions of rows, so the follower, the bot's commands and the tests share them. Discord
renders markdown: names are bold, tables go in code blocks (monospace keeps the columns).
"""

from __future__ import annotations

import json
import math
import re
import time

DISCORD_LIMIT = 2000  # characters per message
FENCE = "```"
_MODELS = ("policy", "planner", "talker")
# the message a run that simply finished ends with; the head line says it already
_ROUTINE_END = re.compile(r"^\d+/\d+ gates passed in \d+s$")


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Cut text into messages of at most limit characters, at line ends where it can.

    A code block cut in two is closed at the end of one part and opened again at the start of
    the next, so each part renders on its own.
    """
    if len(text) <= limit:
        return [text]
    reserve = 2 * (len(FENCE) + 1)  # room to close and reopen a block
    parts: list[str] = []
    current = ""
    in_block = False
    for line in _short_lines(text.split("\n"), limit - reserve):
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) + (len(FENCE) + 1 if in_block else 0) > limit and current:
            parts.append(current + ("\n" + FENCE if in_block else ""))
            current = (FENCE + "\n" + line) if in_block else line
        else:
            current = candidate
        if line.startswith(FENCE):
            in_block = not in_block
    if current:
        parts.append(current)
    return parts


def _short_lines(lines: list[str], width: int) -> list[str]:
    out = []
    for line in lines:
        while len(line) > width:
            out.append(line[:width])
            line = line[width:]
        out.append(line)
    return out


def clip(text: str, limit: int = DISCORD_LIMIT) -> str:
    """One message that must stay one (a status edited in place): cut, and say so."""
    return text if len(text) <= limit else text[: limit - 2] + " …"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        return f"{value:.4g}"
    return str(int(value))


def _clock(t: float | None = None) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(time.time() if t is None else t))


def _config(run: dict) -> dict:
    try:
        return json.loads(run.get("config_json") or "{}")
    except ValueError:
        return {}


def _summary(row: dict) -> str:
    try:
        return (json.loads(row.get("detail_json") or "{}") or {}).get("summary") or ""
    except ValueError:
        return ""


def latest_gates(eval_rows: list[dict]) -> list[dict]:
    """One row per gate, the newest, in the order the gates first appeared."""
    by_name: dict[str, dict] = {}
    for row in eval_rows:
        by_name[row["gate"]] = row
    return list(by_name.values())


# one message per event


def run_started(run: dict) -> str:
    cfg = _config(run)
    steps = cfg.get("steps") or {}
    # the brain's order, not the stored (alphabetical) one
    order = [m for m in _MODELS if m in steps] + sorted(set(steps) - set(_MODELS))
    plan = ", ".join(f"{m} {steps[m]}" for m in order)
    source = f"; continues run {run['resumed_from']}" if run.get("resumed_from") else ""
    return (f"▶ **run {run['id']} started**: profile {run['profile']} on {cfg.get('device', '?')}"
            f"{'; steps ' + plan if plan else ''}{source} ({run['host']}, pid {run['pid']})")


def status(run: dict, progress: dict, gates: list[dict], gpu: str) -> str:
    """The one message per run that is edited in place as the run moves."""
    lines = [f"📊 **run {run['id']}** · {run['status']}"
             + (f" · verdict **{run['verdict'].upper()}**" if run.get("verdict") else "")]
    if progress:
        total = (_config(run).get("steps") or {}).get({"sft": "talker"}.get(progress["phase"], progress["phase"]))
        of = f"/{total}" if total and progress["phase"] != "da" else ""
        speed = f" · {progress['tokens_per_s'] / 1000:.1f}k tok/s" if progress.get("tokens_per_s") else ""
        loss = f" · loss {progress['loss']:.4f}" if progress.get("loss") is not None else ""
        lines.append(f"phase {progress['phase']} · step {progress['step']}{of}{loss}{speed} · GPU {gpu}")
    else:
        lines.append(f"preparing · GPU {gpu}")
    if gates:
        failed = [g for g in gates if not g["passed"]]
        lines.append(f"gates so far: {len(gates) - len(failed)}/{len(gates)} pass"
                     + ("" if failed else " ✓"))
        for g in failed:
            lines.append(f"✗ {g['gate']} {_fmt(g['value'])} (needs {g['threshold'] or '-'})")
    else:
        lines.append("gates so far: none judged yet")
    lines.append(f"updated {_clock()}")
    return clip("\n".join(lines))


def run_ended(run: dict, gates: list[dict]) -> str:
    """The verdict: one line, then the gate table in a code block (split when long)."""
    seconds = (run["finished"] or time.time()) - run["created"]
    n_pass = sum(1 for g in gates if g["passed"])
    verdict = (run.get("verdict") or "none").upper()
    head = (f"■ **run {run['id']} {run['status']}**: verdict **{verdict}** ({n_pass}/{len(gates)} gates passed) "
            f"in {seconds:.0f}s")
    if run.get("message") and not _ROUTINE_END.match(run["message"]):
        head += f"\n{run['message']}"  # why it ended, when that is news: a crash, a guard's stop
    return head + ("\n" + gate_table(gates) if gates else "")


def gate_report(run: dict, gates: list[dict]) -> str:
    """!gates: the run's gates so far, or its verdict once it ended."""
    if run["status"] != "running":
        return run_ended(run, gates)
    n_pass = sum(1 for g in gates if g["passed"])
    head = f"**run {run['id']} running**: {n_pass}/{len(gates)} gates passed so far"
    return head + ("\n" + gate_table(gates) if gates else "")


def gate_table(gates: list[dict]) -> str:
    width = max(len(g["gate"]) for g in gates)
    table = [f"{'gate':<{width}}  {'value':>8}  {'threshold':<10}  result"]
    for g in gates:
        line = f"{g['gate']:<{width}}  {_fmt(g['value']):>8}  {(g['threshold'] or '-'):<10}  "
        line += "PASS" if g["passed"] else f"FAIL  {_summary(g)[:100]}"
        table.append(line.rstrip())
    return "\n".join([FENCE, *table, FENCE])


def gate_failed(run: dict, row: dict) -> str:
    summary = _summary(row)
    return (f"✗ **run {run['id']}: gate {row['gate']} failed**: {_fmt(row['value'])}, needs {row['threshold'] or '-'}"
            + (f"\n{summary}" if summary else ""))


def alarm(run: dict, event: dict) -> str:
    return f"🚨 **run {run['id']} alarm** ({event['kind']}): {event['message']}"


def rollback(run: dict, event: dict) -> str:
    return f"↩ **run {run['id']} rollback**: {event['message']}"


def crash(run: dict, message: str) -> str:
    return f"💥 **run {run['id']} crashed**: {message}"


def heartbeat(host: str, pid: int, running: list[tuple[dict, dict]], queued: int) -> str:
    """running: (run, progress) of each run training now."""
    if running:
        what = "; ".join(f"run {r['id']} {p.get('phase', 'preparing')} step {p.get('step', 0)}"
                         + (f" loss {p['loss']:.4f}" if p.get("loss") is not None else "") for r, p in running)
    else:
        what = "no run training"
    backlog = f"; {queued} message(s) waiting to go out" if queued else ""
    return f"💓 navi alive on {host} (pid {pid}) at {_clock()}: {what}{backlog}"


# bot commands


def runs_table(runs: list[dict]) -> str:
    if not runs:
        return "no runs yet"
    lines = [f"{'id':>4}  {'created':<16}  {'status':<9}  {'verdict':<7}  message"]
    for r in runs:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created"]))
        lines.append(f"{r['id']:>4}  {created:<16}  {r['status']:<9}  {r['verdict'] or '-':<7}  "
                     f"{(r['message'] or '')[:60]}")
    return "\n".join([FENCE, *lines, FENCE])
