from sfhfe_node.cli import main

raise SystemExit(main())
