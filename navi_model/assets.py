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


def benches_dir() -> Path:
    """The hand-written wild benches (*_wild.jsonl) sit in the corpus folder beside the generated
    ones, so a run loads them with the rest; `eval --bench FILE.jsonl` takes them too."""
    return corpus_dir()
