"""`navi-tui ... train` with every trainer's seed set (issue 16's seed spread), the rest as given.

    python benchmarks/seeded_train.py SEED --home H --no-ui --profile base train --data assets/holdout_corpus
"""

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from navi_model import config  # noqa: E402

seed = int(sys.argv[1])
for name, p in list(config.PROFILES.items()):
    config.PROFILES[name] = replace(p, **{t: replace(getattr(p, t), seed=seed)
                                          for t in ("policy_train", "planner_train", "talker_train")})

from navi_tui.cli import main  # noqa: E402

raise SystemExit(main(sys.argv[2:]))
