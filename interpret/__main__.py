from lstmscope.cli import main

raise SystemExit(main())
