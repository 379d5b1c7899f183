from medseg.cli import main

raise SystemExit(main())
