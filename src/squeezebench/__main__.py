from squeezebench.cli import main

raise SystemExit(main())
