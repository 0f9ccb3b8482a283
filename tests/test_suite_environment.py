"""The conditions the tests make for themselves, so that a contributor's run of one file, from
any folder, in any virtual environment, tests this checkout as CI's run does."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_process_a_test_starts_imports_this_checkouts_dreamtext(tmp_path):
    """`python -m dreamtext.cli` started by a test, in a folder outside the checkout, in a
    virtual environment where another checkout is installed (`pip install -e`), ran that one:
    the test passed for code the contributor had not written (or, with none installed, failed
    with "No module named 'dreamtext'")."""
    done = subprocess.run(
        [sys.executable, "-c", "import dreamtext; print(dreamtext.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == ROOT / "dreamtext" / "__init__.py"
