"""`python -m tests.seeded_deepzoo ARGS` = `python -m deepzoo ARGS` with the suite's seed offset
(DEEPZOO_TEST_SEED_OFFSET, tests/conftest.py) patched into torch, as it is in the test process: a
run in a subprocess (torchrun's ranks) then seeds what an in-process run compared with it seeds."""

import tests.conftest  # noqa: F401  (the patch is made on import)
from deepzoo.cli import main

if __name__ == "__main__":
    main()
