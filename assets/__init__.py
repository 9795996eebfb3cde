"""navi's bundled data. Installed as the package `navi_assets` (see pyproject.toml), so the
corpus is found after a plain, non-editable `pip install .` as well as in a source checkout."""
