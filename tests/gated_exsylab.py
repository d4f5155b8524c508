"""Test-only launcher: `python tests/gated_exsylab.py <exsylab arguments>`, holding a run at datasets the test picks.

With EXSYLAB_TEST_GATES=DIR, each time a dataset is recorded complete (the k-th of this process,
counting from 1) the launcher writes DIR/at-k; if DIR/hold-k exists it then holds that lane until
the test deletes DIR/hold-k (bounded by HOLD_REAL_S). A test can so look at the page, pause, or
kill the process while a run stands at a known point, never after a real-time guess.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition import cli  # noqa: E402
from acquisition.journal import Journal  # noqa: E402

HOLD_REAL_S = 120.0


def install(gates: Path) -> None:
    original = Journal.record_dataset
    lock = threading.Lock()
    count = [0]

    def record_dataset(self, **kwargs):
        original(self, **kwargs)
        if kwargs.get("status") != "done":
            return
        with lock:
            count[0] += 1
            k = count[0]
        (gates / f"at-{k}").write_text(f"{kwargs['dataset']}/{kwargs['expno']}\n")
        hold = gates / f"hold-{k}"
        deadline = time.monotonic() + HOLD_REAL_S
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    Journal.record_dataset = record_dataset  # type: ignore[method-assign]


if __name__ == "__main__":
    if os.environ.get("EXSYLAB_TEST_GATES"):
        install(Path(os.environ["EXSYLAB_TEST_GATES"]))
    sys.exit(cli.main(sys.argv[1:]))
