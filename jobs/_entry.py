"""What the three entry scripts share: make the uploaded working directory's ``pipeline`` package
importable (``ray job submit --working-dir`` runs them from Ray's copy of the folder), and say in one
line when the interpreter is not the project's (a ``python`` on the PATH of the shell that started
the Ray head, without the project's packages)."""

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(module: str) -> None:
    """Exit with ``module.main()``'s code: 0 done, 1 a stage failed, 2 a mistake to fix."""
    sys.path.insert(0, str(REPO))
    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "pipeline":
            raise
        print(f"error: {sys.executable} has no module {err.name!r}: run with the project's environment "
              "(bash infra/install.sh, then source .venv/bin/activate before ray start and ray job submit, "
              "or call .venv/bin/python)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
