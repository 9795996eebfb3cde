"""A plain (non-editable) install carries the bundled corpus and the navi-tui script.

    python -m pytest tests/test_packaging.py -q
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_plain_install_finds_the_bundled_corpus(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile",
         "--target", str(target), str(REPO)],
        check=True, cwd=tmp_path, capture_output=True,
    )
    # -S: no site-packages, so neither the source tree nor an editable install can answer
    code = ("import navi_model, navi_model.assets as a; print(navi_model.__file__); "
            "print(a.corpus_dir()); import json; print(json.dumps(sorted(p.name for p in a.corpus_dir().glob('*.jsonl'))))")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(target)}).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert out[1] == str(target / "navi_assets" / "corpus")
    names = json.loads(out[2])
    assert names == sorted(p.name for p in (REPO / "assets" / "corpus").glob("*.jsonl"))
    for name in names:
        assert (target / "navi_assets" / "corpus" / name).read_bytes() == (REPO / "assets" / "corpus" / name).read_bytes()
    script = (target / "bin" / "navi-tui").read_text()
    assert "from navi_tui.cli import main" in script
