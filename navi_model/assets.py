"""Where the bundled data lives, installed or in a source checkout."""

from __future__ import annotations

from pathlib import Path


def assets_dir() -> Path:
    try:
        # installed: assets/ is packaged as navi_assets (pyproject.toml maps it)
        import navi_assets

        return Path(navi_assets.__file__).resolve().parent
    except ImportError:
        # a source checkout run without installing: assets/ sits beside navi_model/
        return Path(__file__).resolve().parents[1] / "assets"


def corpus_dir() -> Path:
    return assets_dir() / "corpus"


def holdout_corpus_dir() -> Path:
    """The corpus held out by core (navi_model/corpus/generate.py writes it): 40+ cores per intent in
    every style, unseen-core benches, and the hand-written wild benches (*_wild.jsonl) beside them.
    Not yet the default: the brain does not pass its honest benches (docs/benchmarks.md, issue 16)."""
    return assets_dir() / "holdout_corpus"


def benches_dir() -> Path:
    """The hand-written wild benches (*_wild.jsonl) sit in the held-out corpus folder beside the
    generated files, so a run on it loads them with the rest; `eval --bench FILE.jsonl` takes them too."""
    return holdout_corpus_dir()
