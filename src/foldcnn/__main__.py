from foldcnn.cli import main

raise SystemExit(main())
