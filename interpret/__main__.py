from interpret.cli import main

raise SystemExit(main())
