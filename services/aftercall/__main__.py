from aftercall.cli import main

raise SystemExit(main())
