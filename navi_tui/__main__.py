import os

if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
    # a torchrun worker (torchrun ... -m navi_tui): rank 0 writes the store, the others only train
    from navi_tui.distributed_run import worker_main

    raise SystemExit(worker_main())

from navi_tui.cli import main

raise SystemExit(main())
