from curridistill.cli import main

raise SystemExit(main())
