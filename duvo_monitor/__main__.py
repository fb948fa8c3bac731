from __future__ import annotations

from duvo_monitor.cli import main

raise SystemExit(main())
