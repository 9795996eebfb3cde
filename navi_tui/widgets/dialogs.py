"""Modal screens: pick a checkpoint to roll back to, confirm quitting a live run, help, text, compare."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from navi_tui.widgets.panes import fmt

# every key of the console and the headless command that does the same
KEYS = [
    ("t", "train a new run", "navi-tui --no-ui train"),
    ("c", "continue the open run from its newest checkpoint", "navi-tui --no-ui train --resume RUN"),
    ("p", "pause / resume training", "ctrl-z / fg (headless has no pause of its own)"),
    ("s", "stop training (saves a checkpoint)", "ctrl-c"),
    ("e", "evaluate the open run's checkpoints on its benches", "navi-tui --no-ui eval --run RUN"),
    ("r", "roll back: pick a checkpoint, training continues from it", "navi-tui --no-ui rollback --run RUN --to ID"),
    ("g", "gallery now: greedy answers of the talker", "navi-tui --no-ui eval --run RUN --bench gallery.jsonl"),
    ("d", "diagnose: one batch through every stage of the talker", "navi-tui --no-ui diagnose --run RUN"),
    ("enter", "open the run under the cursor (runs tab)", "navi-tui --no-ui runs"),
    ("m / v", "mark a run, then compare it with the one under the cursor", "navi-tui --no-ui runs --json"),
    ("?", "this help", "navi-tui --help"),
    ("q", "quit (asks first while a run trains; stops it with a checkpoint)", "-"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        table = DataTable(id="help-table", cursor_type="none")
        table.add_columns("key", "does", "headless")
        for row in KEYS:
            table.add_row(*row)
        with Vertical(id="dialog"):
            yield Static(Text("navi keys", style="bold"))
            yield table
            yield Static("escape closes")


class TextScreen(ModalScreen[None]):
    """A block of text, e.g. the diagnose trace."""

    BINDINGS = [Binding("escape,q", "dismiss", "close")]

    def __init__(self, title: str, text: str):
        super().__init__()
        self.title_text, self.body = title, text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.title_text, style="bold"))
            yield Static(self.body, id="text-body")
            yield Static("escape closes")


class ConfirmQuit(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, run_id: int | None):
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(f"run {self.run_id or ''} is training.", style="bold"))
            yield Static("quit now? training stops at the next step and saves a checkpoint first.  y / n")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class CheckpointPicker(ModalScreen[int | None]):
    """Each checkpoint with its step, phase and verdict; enter picks, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, run_id: int, checkpoints: list[dict], verdicts: dict[int, str]):
        super().__init__()
        self.run_id, self.checkpoints, self.verdicts = run_id, checkpoints, verdicts

    def compose(self) -> ComposeResult:
        table = DataTable(id="checkpoint-table", cursor_type="row")
        table.add_columns("id", "model", "phase", "step", "verdict")
        for c in self.checkpoints:
            v = self.verdicts.get(c["id"], "-")
            table.add_row(str(c["id"]), c["model"], c["phase"], str(c["step"]),
                          Text(v, style="green" if v == "pass" else "bold red" if v == "fail" else ""), key=str(c["id"]))
        with Vertical(id="dialog"):
            yield Static(Text(f"roll back run {self.run_id}: pick a checkpoint", style="bold"))
            yield table
            yield Static("enter: continue training from it as a new run   escape: cancel")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.focus()
        if self.checkpoints:
            table.move_cursor(row=len(self.checkpoints) - 1)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.dismiss(int(event.row_key.value))

    def action_cancel(self) -> None:
        self.dismiss(None)


class CompareScreen(ModalScreen[None]):
    """Two runs side by side: status, profile, steps, and every gate's value and state."""

    BINDINGS = [Binding("escape,q", "dismiss", "close")]

    def __init__(self, left: dict, right: dict):
        super().__init__()
        self.left, self.right = left, right  # {"run": row, "gates": {name: eval row}, "config": dict}

    def compose(self) -> ComposeResult:
        a, b = self.left, self.right
        table = DataTable(id="compare-table", cursor_type="none")
        table.add_columns("", f"run {a['run']['id']}", f"run {b['run']['id']}")
        for label, key in (("status", "status"), ("verdict", "verdict"), ("profile", "profile"), ("message", "message")):
            table.add_row(label, str(a["run"].get(key) or "-")[:40], str(b["run"].get(key) or "-")[:40])
        for label in ("steps", "device", "steps_from"):
            table.add_row(label, str(a["config"].get(label, "-")), str(b["config"].get(label, "-")))
        for name in sorted(set(a["gates"]) | set(b["gates"])):
            table.add_row(name, _gate_cell(a["gates"].get(name)), _gate_cell(b["gates"].get(name)))
        with Vertical(id="dialog"):
            yield Static(Text("compare runs", style="bold"))
            yield table
            yield Static("escape closes")


def _gate_cell(row: dict | None) -> Text:
    if row is None:
        return Text("-", style="dim")
    return Text(f"{fmt(row['value'])} {'PASS' if row['passed'] else 'FAIL'}",
                style="green" if row["passed"] else "bold red")
