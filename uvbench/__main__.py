from uvbench.cli import main

raise SystemExit(main())
