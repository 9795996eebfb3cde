"""A planted rank failure for tests/test_distributed.py, kept out of the product code.

With this folder first on PYTHONPATH, every Python process of a torchrun job imports this file
at start-up. In the worker whose RANK is NAVI_TEST_FAULT_RANK it replaces the planner's trainer
by one that raises (or, with NAVI_TEST_FAULT_MODE=kill, kills its own process), so that rank fails when the planner phase begins, as a real rank would
(out of memory, a bad GPU): after the policy trained in step with the others.
"""

import os

if os.environ.get("NAVI_TEST_FAULT_RANK") is not None and os.environ.get("RANK") == os.environ["NAVI_TEST_FAULT_RANK"]:
    import navi_model.planner as _planner

    def _fail(*args, **kwargs):
        if os.environ.get("NAVI_TEST_FAULT_MODE") == "kill":
            # the rank dies at once, with no chance to record anything (the OOM killer, a lost node)
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("planted fault in the planner phase")

    _planner.train_planner = _fail
