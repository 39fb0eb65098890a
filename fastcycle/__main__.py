from fastcycle.cli import main

raise SystemExit(main())
