"""The console's table and text panes. Each `show(...)` takes plain data and redraws only what changed."""

from __future__ import annotations

import math
import time

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable, Static

from navi_tui.run_view import RunView

LIVE_SAMPLES = 60  # a whole gallery asked for with g (50) fits
LEVEL_STYLE = {"info": "", "warn": "yellow", "error": "bold red"}
STATUS_STYLE = {"running": "bold cyan", "completed": "green", "stopped": "yellow", "failed": "bold red",
                "crashed": "bold red"}


def fmt(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
        return f"{v:.{digits}g}"
    return f"{int(v)}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class RunHeader(Static):
    """run id, phase, step, loss, tokens/s and ETA, on one line."""

    def show(self, view: RunView, *, live: str, mirror: str | None = None) -> None:
        lt = view.latest
        if view.run_id is None and lt.phase is None:
            self._show(Text.assemble(("navi", "bold"), "  no run open: ", ("t", "bold"), " trains a new one, ",
                                     ("enter", "bold"), " on a run in the runs tab opens it"))
            return
        total = view.totals.get(lt.phase or "", 0)
        status = view.status
        parts = [("navi", "bold"), "  run ", (str(view.run_id or "…"), "bold"),
                 "  ", (status, STATUS_STYLE.get(status, "")), f" {live}" if live else "",
                 "  phase ", (lt.phase or "-", "bold"),
                 f"  step {lt.step}" + (f"/{total}" if total else ""),
                 "  loss ", (fmt(lt.loss), "bold"),
                 f"  {lt.tokens_per_s / 1000:.1f}k tok/s" if lt.tokens_per_s else "  - tok/s",
                 f"  ETA {fmt_seconds(view.eta_seconds())}" if status == "running" else ""]
        if mirror:
            parts.append(f"  {mirror}")
        self._show(Text.assemble(*[p for p in parts if p]))

    def _show(self, text: Text) -> None:
        # the header is asked 4 times a second; repaint only when it reads differently
        if text.markup != getattr(self, "_shown", None):
            self._shown = text.markup
            # one line of fixed height: a layout pass of the whole screen would cost the trainer the gil
            self.update(text, layout=False)


class SystemPane(Static):
    """CPU and RAM of the whole machine; the GPU's utilisation, memory, power and temperature."""

    def show(self, s: dict) -> None:
        lines = [f"CPU  {s['cpu_percent']:5.1f}% of {s['cpus']} cores",
                 f"RAM  {s['ram_percent']:5.1f}%  {s['ram_used_gib']:.1f}/{s['ram_total_gib']:.1f} GiB"]
        g = s.get("gpu")
        if g:
            lines += [f"GPU  {g['util']:5.1f}%  {g['name']}",
                      f"VRAM {100 * g['mem_used_gib'] / max(g['mem_total_gib'], 1e-9):5.1f}%  "
                      f"{g['mem_used_gib']:.1f}/{g['mem_total_gib']:.1f} GiB",
                      f"PWR  {g['power_w']:.0f}/{g['power_limit_w']:.0f} W" if "power_w" in g else "PWR  -",
                      f"TEMP {g['temp_c']:.0f} C"]
        else:
            lines.append(f"GPU  {s.get('gpu_error') or 'no GPU'}: training runs on the CPU")
        text = "\n".join(lines)
        if text != getattr(self, "_shown", None):
            self._shown = text
            self.update(text, layout=False)  # a fixed-size pane: no layout pass


class WeightsTable(DataTable):
    """The planner's per-class loss weights beside each class's raw and weighted share (M-002). The
    CTC planner weighs every action alike and stores shares only: its weights show as "-"."""

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.add_columns("class", "weight", "share", "weighted")
        self._shown: tuple = ()

    def show(self, view: RunView) -> None:
        rows = tuple((c, view.class_weights.get(c), *view.class_shares.get(c, (None, None)))
                     for c in sorted(set(view.class_weights) | set(view.class_shares)))
        if rows == self._shown:
            return
        self._shown = rows
        self.clear()
        for c, w, raw, weighted in rows:
            share = f"{100 * raw:.1f}%" if raw is not None else "-"
            judged = weighted if weighted is not None else raw  # the share the loss sees
            wshare = Text(f"{100 * weighted:.1f}%" if weighted is not None else "-",
                          style="bold red" if judged is not None and judged > 0.2 else "")
            self.add_row(c, fmt(w, 3), share, wshare)


class GatesTable(DataTable):
    """Every gate's value, threshold and state; failures first."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns("gate", "value", "threshold", "state", "detail")
        self._shown: tuple = ()

    def show(self, view: RunView) -> None:
        rows = tuple((g["gate"], g["value"], g["threshold"], g["passed"], _summary(g)) for g in view.gate_rows())
        if rows == self._shown:
            return
        self._shown = rows
        self.clear()
        for name, value, threshold, passed, summary in rows:
            state = Text("PASS", style="green") if passed else Text("FAIL", style="bold red")
            self.add_row(name, fmt(value), threshold or "-", state, summary)
        n_pass = sum(1 for r in rows if r[3])
        self.border_subtitle = (f"{n_pass}/{len(rows)} pass" if rows else "none yet: gates land as each model is judged")


def _summary(row: dict) -> str:
    import json

    try:
        return str(json.loads(row.get("detail_json") or "{}").get("summary", ""))[:60]
    except ValueError:
        return ""


class GalleryTable(DataTable):
    """Prompt, output, reference and match: the stored gallery of the newest talker checkpoint,
    or, while the talker trains, the samples it takes along the way."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns("step", "match", "prompt", "output", "reference")
        self._shown: tuple = ()

    def show(self, view: RunView) -> None:
        if view.gallery:
            rows = tuple(("final", bool(g["exact"]), g["prompt"], g["output"], g["reference"], g["score"])
                         for g in view.gallery)
        else:
            # the newest samples only: the table is rebuilt at each sample, while the trainer runs
            rows = tuple((str(s["step"]), s["output"] == s["reference"], s["prompt"], s["output"], s["reference"], None)
                         for s in reversed(view.samples[-LIVE_SAMPLES:]))
        if rows == self._shown:
            return
        self._shown = rows
        self.clear()
        for step, exact, prompt, output, reference, score in rows:
            match = Text("exact", style="green") if exact else Text(f"{score:.2f}" if score is not None else "miss",
                                                                     style="yellow")
            self.add_row(step, match, repr(prompt)[1:-1][:40], repr(output)[1:-1][:48], repr(reference)[1:-1][:48])
        exact = sum(1 for r in rows if r[1])
        self.border_subtitle = f"{exact}/{len(rows)} exact" if rows else "no samples yet"

    def sample(self, index: int) -> dict | None:
        """The whole sample behind a row, uncut."""
        if not 0 <= index < len(self._shown):
            return None
        step, exact, prompt, output, reference, score = self._shown[index]
        return {"step": step, "prompt": prompt, "output": output, "reference": reference,
                "match": "exact" if exact else (f"{score:.3f}" if score is not None else "miss")}


class RunsTable(DataTable):
    """The store's run history: status and verdict; enter opens a run, m marks one to compare."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns("id", "created", "status", "verdict", "profile", "from", "message")
        self._shown: tuple = ()
        self.marked: int | None = None

    def show(self, runs: list[dict]) -> None:
        rows = tuple((r["id"], r["created"], r["status"], r["verdict"], r["profile"], r.get("resumed_from"),
                      r["message"]) for r in runs)
        key = (rows, self.marked)
        if key == self._shown:
            return
        self._shown = key
        cursor = self.cursor_row
        self.clear()
        for rid, created, status, verdict, profile, source, message in rows:
            mark = "*" if rid == self.marked else ""
            self.add_row(f"{mark}{rid}", time.strftime("%m-%d %H:%M:%S", time.localtime(created)),
                         Text(status, style=STATUS_STYLE.get(status, "")),
                         Text(verdict or "-", style="green" if verdict == "pass" else "bold red" if verdict else ""),
                         profile or "-", str(source or ""), (message or "")[:70], key=str(rid))
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1))

    def highlighted_run(self) -> int | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return int(key.value)


class EventsLog(Widget, can_focus=True):
    """The run's log: phases, checkpoints, samples, warnings, rollbacks, crashes; newest at the bottom.

    Not a RichLog: a scrolling widget that grows lays out the whole screen at every write (40 ms
    of the gil, measured), which a trainer on another thread pays for. This one only repaints;
    up / down / page keys scroll back through the newest MAX_LINES lines.
    """

    MAX_LINES = 2000
    BINDINGS = [Binding("up", "scroll(1)", show=False), Binding("down", "scroll(-1)", show=False),
                Binding("pageup", "scroll(20)", show=False), Binding("pagedown", "scroll(-20)", show=False),
                Binding("end", "scroll(-1000000)", show=False)]

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lines: list[Text] = []
        self.back = 0  # lines scrolled back from the newest

    def clear(self) -> None:
        self.lines, self.back = [], 0
        self.refresh()

    def show(self, view: RunView, shown: int) -> int:
        """Add the events past `shown` (a running count); returns the new count."""
        total = view.event_total
        new = min(total - shown, len(view.events))
        if new <= 0:
            return total
        for at, level, kind, message in list(view.events)[-new:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(at))
            self.lines.append(Text.assemble((stamp, "dim"), " ", (f"{kind:<10}", "bold"), " ",
                                            (message, LEVEL_STYLE.get(level, "")), no_wrap=True, overflow="ellipsis"))
        del self.lines[:-self.MAX_LINES]
        if self.back:
            self.back = min(self.back + new, max(0, len(self.lines) - 1))  # stay on the lines being read
        self.refresh()
        return total

    def action_scroll(self, lines: int) -> None:
        self.back = max(0, min(self.back + lines, max(0, len(self.lines) - self.size.height)))
        self.refresh()

    def render(self) -> Text:
        end = len(self.lines) - self.back
        shown = self.lines[max(0, end - self.size.height):end]
        return Text("\n", no_wrap=True).join(shown)
