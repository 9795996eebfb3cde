"""Corrupt and hostile checkpoints, through the real command line: `eval --run R`, `train --resume R`
and `rollback --run R --to C` refuse each one with exit 2 and one line naming the checkpoint (id,
path) and what is wrong, and the store is left exactly as it was (every row, every file).

    python -m pytest -q tests/test_checkpoint_faults.py

The faults are planted in a copy of one real store (conftest.py's session run, 3 steps on the
small corpus: it fails its gates, which is fine here). A corrupt file is caught by its sha256; a
hostile or foreign file whose sha256 was recorded with it gets past that check, so what stops it is
torch's weights-only unpickler and navi_model.payload's check of what the payload holds.
"""

import hashlib
import io
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from navi_model.config import get_profile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from navi_tui.cli import main
from navi_tui.stored_checkpoint import load_stored_checkpoint
from store import CheckpointError, Store
from cli_harness import one_line_error, run_main, store_dump, tally

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("NAVI_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def trained_home(trained_home_template):
    # read here, never changed: each test plants its fault in a copy (home)
    with Store(trained_home_template) as store:
        assert {c["model"] for c in store.checkpoints(1)} == {"policy", "planner", "talker"}
    return trained_home_template


@pytest.fixture
def home(trained_home, tmp_path):
    dest = tmp_path / "home"
    shutil.copytree(trained_home, dest)
    return dest


def rows(home) -> dict[str, dict]:
    """The checkpoint rows each command loads: policy (every command needs it), planner (the
    rollback target), talker (the newest: what eval and resume continue from)."""
    with Store(home) as store:
        return {"policy": store.latest_checkpoint(1, "policy"), "planner": store.latest_checkpoint(1, "planner"),
                "talker": store.latest_checkpoint(1, "talker")}


def command(name: str, home) -> list:
    planner = rows(home)["planner"]["id"]
    return {"eval": ["eval", "--run", 1], "resume": ["train", "--resume", 1],
            "rollback": ["rollback", "--run", 1, "--to", planner]}[name]


# the checkpoint each command is aimed at
TARGET = {"eval": "talker", "resume": "talker", "rollback": "planner"}


def refuse(home, cmd: str) -> str:
    """Run cmd on home; it must exit 2 with one error line and change nothing. -> the line."""
    before = store_dump(home)
    code, _, err = run_main(main, ["--home", home, "--no-ui", *command(cmd, home)])
    assert code == 2, (code, err)
    line = one_line_error(err)
    assert store_dump(home) == before  # no run row, no eval row, no event, no file
    return line


def record_sha(home, row: dict) -> None:
    """Plant the file's own sha256 in the store, as if it had been recorded with the file, so only
    the loader itself stands between the file and the command."""
    path = home / row["path"]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    db = sqlite3.connect(home / "navi.db")
    with db:
        db.execute("UPDATE checkpoints SET sha256 = ? WHERE path = ?", [sha, row["path"]])
    db.close()


# --- corrupt files: the sha256 catches them ----------------------------------------------------

def flip(offset):
    def fault(path: Path):
        data = bytearray(path.read_bytes())
        data[offset(len(data))] ^= 0xFF
        path.write_bytes(bytes(data))
    return fault


def truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def missing(path: Path):
    path.unlink()


FAULTS = {
    "header byte": (flip(lambda n: 0), "checksum mismatch"),  # the zip's 'PK' magic
    "middle byte": (flip(lambda n: n // 2), "checksum mismatch"),
    "last byte": (flip(lambda n: n - 1), "checksum mismatch"),
    "truncated": (truncate, "checksum mismatch"),
    "missing": (missing, "checkpoint file missing"),
}


@pytest.mark.parametrize("cmd", ["eval", "resume", "rollback"])
@pytest.mark.parametrize("fault", [*FAULTS, "another valid checkpoint"])
def test_a_corrupt_checkpoint_is_refused(home, cmd, fault):
    row = rows(home)[TARGET[cmd]]
    path = home / row["path"]
    if fault == "another valid checkpoint":
        # a real checkpoint of the same run, copied over this one: intact, but not what was recorded
        shutil.copyfile(home / rows(home)["policy"]["path"], path)
        reason = "checksum mismatch"
    else:
        plant, reason = FAULTS[fault]
        plant(path)
    line = refuse(home, cmd)
    assert f"checkpoint {row['id']} ({row['model']}, " in line
    assert str(path) in line and reason in line


def test_a_corrupt_checkpoint_that_a_later_one_continues_from_is_named_as_such(home):
    # rolling back to the planner needs the policy it was trained after: a broken policy file is named
    policy, planner = rows(home)["policy"], rows(home)["planner"]
    flip(lambda n: n // 3)(home / policy["path"])
    line = refuse(home, "rollback")
    assert f"checkpoint {policy['id']} (policy, policy, step {policy['step']} of run 1; the policy that checkpoint " \
           f"{planner['id']} (planner) continues from)" in line
    assert "checksum mismatch" in line


# --- hostile files: a pickle that runs code, its sha256 recorded ---------------------------------

class CreatesAFile:
    """Unpickling this calls open(marker, "w"): the file appearing is code having run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_hostile(path: Path, marker: Path, how: str) -> None:
    payload = {"model": CreatesAFile(marker), "model_args": {}, "step": 0}
    with open(path, "wb") as f:
        if how == "torch.save":  # a zip like every real checkpoint, data.pkl inside
            torch.save(payload, f)
        else:  # torch's legacy format is a bare pickle
            pickle.dump(payload, f, protocol=2)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_the_hostile_payload_runs_code_when_loaded_unsafely(tmp_path, how):
    # the fault is live: without weights_only this very file creates its marker
    marker = tmp_path / "ran"
    write_hostile(tmp_path / "evil.pt", marker, how)
    with open(tmp_path / "evil.pt", "rb") as f:
        torch.load(f, weights_only=False) if how == "torch.save" else pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("cmd", ["eval", "resume", "rollback"])
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(home, tmp_path, cmd, how):
    marker = tmp_path / "code-ran"
    row = rows(home)[TARGET[cmd]]
    write_hostile(home / row["path"], marker, how)
    record_sha(home, row)
    line = refuse(home, cmd)
    assert not marker.exists()
    assert f"checkpoint {row['id']} (" in line and str(home / row["path"]) in line
    # the global it refused is named; torch's advice to load it unsafely or allowlist it is not passed on
    assert "is not a safe weights-only checkpoint, so it was not loaded: Unsupported global: GLOBAL io.open" in line
    assert "weights_only` set to `False`" not in line and "add_safe_globals" not in line and "\x1b" not in line


# --- valid torch, but not a navi payload ----------------------------------------------------------

def loaded(home, model):
    return torch.load(home / rows(home)[model]["path"], weights_only=True)


def other_model(home, model):
    # a real checkpoint of another model: every key a payload has, the wrong ones for this model
    return loaded(home, {"policy": "talker", "planner": "policy", "talker": "policy"}[model])


def first_weight(payload, value):
    weights = dict(payload["model"])
    weights[next(iter(weights))] = value
    return {**payload, "model": weights}


FOREIGN = {
    "a tensor": (lambda p, h, m: torch.zeros(3), "holds a Tensor, not a checkpoint payload (a dict)"),
    "an empty dict": (lambda p, h, m: {}, "key 'model' is missing"),
    "no weights": (lambda p, h, m: {k: v for k, v in p.items() if k != "model"}, "key 'model' is missing"),
    "a weight of the wrong shape": (lambda p, h, m: first_weight(p, torch.zeros(3, 3)), "the {m} that model_args describe needs"),
    "a weight that is not a tensor": (lambda p, h, m: first_weight(p, [1.0, 2.0]), "is a list, not a tensor"),
    "a missing weight": (lambda p, h, m: {**p, "model": dict(list(p["model"].items())[1:])}, "is missing"),
    "model_args that build nothing": (lambda p, h, m: {**p, "model_args": {"layers": "many"}}, "key 'model_args': cannot build a {m}"),
    "a step that is not a number": (lambda p, h, m: {**p, "step": "20"}, "key 'step': expected an int, got str"),
    "another model's checkpoint": (lambda p, h, m: other_model(h, m), "{m}"),
}
# what only continuing needs: eval takes these, resume and rollback refuse them
FOREIGN_RESUME = {
    "no optimizer": (lambda p, h, m: {k: v for k, v in p.items() if k != "optimizer"}, "key 'optimizer' is missing"),
    "a sampler of other data": (lambda p, h, m: {**p, "sampler": {**p["sampler"], "n": 7}},
                                "key 'sampler': written for 7 rows in batches of"),
    "coverage counts of other data": (lambda p, h, m: {**p, "seen": torch.zeros(7)},
                                      "does not restore into this run: ValueError: coverage counts for 7 rows"),
}


def plant_foreign(home, cmd, make):
    model = TARGET[cmd]
    row = rows(home)[model]
    payload = make(loaded(home, model), home, model)
    buf = io.BytesIO()
    torch.save(payload, buf)
    (home / row["path"]).write_bytes(buf.getvalue())
    record_sha(home, row)
    return row


# every kind through eval; resume and rollback load through the same check, shown on three kinds
FOREIGN_CASES = [("eval", kind) for kind in FOREIGN] + [
    (cmd, kind) for cmd in ("resume", "rollback")
    for kind in ("no weights", "a weight of the wrong shape", "another model's checkpoint")]


@pytest.mark.parametrize("cmd,kind", FOREIGN_CASES)
def test_a_valid_torch_file_that_is_no_navi_payload_is_refused(home, cmd, kind):
    make, message = FOREIGN[kind]
    row = plant_foreign(home, cmd, make)
    line = refuse(home, cmd)
    assert f"checkpoint {row['id']} ({row['model']}, " in line and str(home / row["path"]) in line
    assert message.format(m=row["model"]) in line


# (a resume from the talker's DA payload starts DA's optimizer afresh: the planner is the one that needs its own)
@pytest.mark.parametrize("cmd,kind", [("rollback", "no optimizer"), ("resume", "a sampler of other data"),
                                      ("rollback", "coverage counts of other data")])
def test_a_payload_that_cannot_continue_is_refused_before_the_run_starts(home, cmd, kind):
    make, message = FOREIGN_RESUME[kind]
    row = plant_foreign(home, cmd, make)
    line = refuse(home, cmd)
    assert f"checkpoint {row['id']} ({row['model']}, " in line and str(home / row["path"]) in line
    assert message in line


def test_eval_needs_no_optimizer(home):
    # the check is not stricter than the command: a payload that resume refuses is sound to evaluate
    policy = rows(home)["policy"]
    payload = {k: v for k, v in loaded(home, "policy").items() if k != "optimizer"}
    torch.save(payload, home / policy["path"])
    record_sha(home, policy)
    code, _, err = run_main(main, ["--home", home, "--no-ui", "eval", "--checkpoint", policy["id"]])
    assert code in (0, 1) and err == "", (code, err)  # judged, not refused


def test_resume_on_another_corpus_is_refused_before_the_run_row(home, tmp_path, small_corpus_dir):
    # found by this harness: the sampler's mismatch surfaced inside the trainer, after the run row,
    # as a traceback (exit 1) and a 'failed' run. Run 1 trained on the small corpus; this one lacks goals
    data = tmp_path / "corpus"
    shutil.copytree(small_corpus_dir, data)
    goals = (data / "goals.jsonl").read_text().splitlines(keepends=True)
    (data / "goals.jsonl").write_text("".join(goals[:-40]))
    before = store_dump(home)
    code, _, err = run_main(main, ["--home", home, "--no-ui", "train", "--resume", 1, "--data", data])
    assert code == 2, (code, err)
    line = one_line_error(err)
    policy = rows(home)["policy"]
    assert f"checkpoint {policy['id']} (policy, " in line
    # the policy's rows: the goals and a noisy copy of noise_rate of them (navi_model/noise.py)
    with_noise = lambda n: n + round(get_profile("tiny").policy_train.noise_rate * n)  # noqa: E731
    assert (f"key 'sampler': written for {with_noise(len(goals))} rows in batches of 64, this run has "
            f"{with_noise(len(goals) - 40)} rows") in line
    assert store_dump(home) == before


# --- any bytes, their sha256 recorded: a sound payload or a refusal, never another exception ------

@dataclass(frozen=True)
class Damage:
    """What a disk, a copy or a person can do to a file; drawn as a few numbers, so a failing
    example prints as one short line, not as megabytes of checkpoint."""
    how: str
    at: tuple[int, ...]  # offsets as shares of the file's length, in [0, 1)
    values: bytes

    def apply(self, data: bytes) -> bytes:
        n = len(data)
        d = bytearray(data)
        pos = [min(n - 1, int(a * n)) for a in self.at]
        if self.how == "flip bytes":
            for p, v in zip(pos, self.values):
                d[p] ^= v or 1
        elif self.how == "truncate":
            d = d[:pos[0]]
        elif self.how == "splice":
            d[pos[0]:pos[0] + len(self.values)] = self.values[::-1]
        elif self.how == "zero a run":
            d[pos[0]:pos[0] + 4096] = bytes(len(d[pos[0]:pos[0] + 4096]))
        elif self.how == "swap halves":
            d = d[pos[0] + 1:] + d[:pos[0] + 1]
        else:  # append
            d += self.values
        return bytes(d)


share = st.floats(0, 1, exclude_max=True)
damages = st.builds(Damage, how=st.sampled_from(["flip bytes", "truncate", "splice", "zero a run", "swap halves",
                                                   "append"]),
                    at=st.lists(share, min_size=1, max_size=16).map(tuple), values=st.binary(min_size=1, max_size=16))


@pytest.fixture(scope="module")
def sources(trained_home):
    """Each model's newest checkpoint: its row and its bytes."""
    out = {}
    for model, row in rows(trained_home).items():
        out[model] = (row, (trained_home / row["path"]).read_bytes())
    return out


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("NAVI_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(model=st.sampled_from(["policy", "planner", "talker"]), damage=damages)
def test_damaged_bytes_whose_sha256_was_recorded_load_sound_or_are_refused(sources, tmp_path, model, damage):
    # found by this harness: bytes torch's unpickler stumbles over raised UnicodeDecodeError and
    # ValueError past the store's handler (a traceback at the command line)
    source, original = sources[model]
    damaged = damage.apply(original)
    home = tmp_path / "home"
    with Store(home) as store:
        path = home / "checkpoints" / "run_0001" / f"{model}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(damaged)
        run_id = store.create_run(profile="tiny", command="train", config={})
        cid = store.add_checkpoint(run_id, step=source["step"], phase=source["phase"], model=model, path=path,
                                   sha256=hashlib.sha256(damaged).hexdigest())
        row = store.get_checkpoint(cid)
        try:
            payload = load_stored_checkpoint(store, row, resume=True)
        except CheckpointError as e:
            tally("checkpoint bytes", damage.how, model, "refused")
            assert str(e).startswith(f"checkpoint {cid} ({model}, "), e
            assert "\n" not in str(e)
        else:  # the damage fell in tensor data: a sound payload, whatever its numbers
            tally("checkpoint bytes", damage.how, model, "loaded")
            assert set(payload) >= {"model", "model_args", "step", "optimizer", "sampler", "seen"}


# --- the real binary, in its own process ----------------------------------------------------------

def test_the_real_binary_refuses_a_hostile_checkpoint(home, tmp_path):
    # one process of its own: what a person sees, warnings and all, is one line on stderr
    cmd = "resume"
    row = rows(home)[TARGET[cmd]]
    marker = tmp_path / "code-ran"
    write_hostile(home / row["path"], marker, "torch.save")
    record_sha(home, row)
    before = store_dump(home)
    r = subprocess.run([sys.executable, "-m", "navi_tui", "--home", str(home), "--no-ui", *map(str, command(cmd, home))],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2, r.stderr
    line = one_line_error(r.stderr)
    assert f"checkpoint {row['id']} (" in line and str(home / row["path"]) in line
    assert "is not a safe weights-only checkpoint" in line
    assert store_dump(home) == before and not marker.exists()
