from navi_tui.cli import main

raise SystemExit(main())
