"""Fixtures shared by the whole session: a small corpus, and one trained home to copy.

Most tests that need a store holding a real run need any real run, not a particular one: that run
is trained once per session (`train --steps 3` on the small corpus; it fails its gates, as these
tests want) and each test or module works on a copy of its own (shutil.copytree: checkpoint paths
are stored relative to the home, so a copy is a home of its own). Tests whose point is training
itself (a key that trains, a crash, a resume, a distributed job) still train their own runs, on the
small corpus wherever the bundled one is not the point.
"""

from __future__ import annotations

import os

# One torch thread in the test process and in every process it starts (they inherit the variable): these
# models are small enough that a second thread buys little, and on a 2-core machine that something else
# is also using, two OpenMP threads wait on each other at every op: a suite measured 8x slower in CPU time
# that way. Set before torch is first imported; a value already set is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from cli_harness import run_main  # noqa: E402
from crash_harness import small_corpus  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# the template run: 3 steps of every phase (--steps bounds DA too)
TEMPLATE_STEPS = 3


@pytest.fixture(scope="session")
def small_corpus_dir(tmp_path_factory) -> Path:
    """A valid corpus in the bundled format, a few lines of each bundled file (crash_harness.small_corpus):
    a run on it is judged in seconds. Shared by the session: copy it to change it."""
    return small_corpus(tmp_path_factory.mktemp("small_corpus") / "corpus")


@pytest.fixture(scope="session")
def trained_home_template(tmp_path_factory, small_corpus_dir) -> Path:
    """A home holding run 1: a real `navi-tui --no-ui --profile tiny train --steps 3 --data SMALL`, trained
    once per session. It fails its gates (3 steps cannot cover a corpus), which is fine: every model has
    its checkpoints, gates, bench items and gallery. Shared by the session: never change it, copy it.
    The run's headless stdout is beside the home, in train-stdout.txt."""
    from navi_tui.cli import main

    home = tmp_path_factory.mktemp("template") / "home"
    code, out, err = run_main(main, ["--home", home, "--no-ui", "--profile", "tiny", "train",
                                     "--steps", TEMPLATE_STEPS, "--data", small_corpus_dir])
    assert code == 1, (code, err)
    (home.parent / "train-stdout.txt").write_text(out)
    return home
