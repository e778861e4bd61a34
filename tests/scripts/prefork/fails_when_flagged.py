"""A shared-import that raises while $FAIL_FLAG exists (broken code on disk)."""
import os

if os.path.exists(os.environ["FAIL_FLAG"]):
    raise RuntimeError("broken on disk (FAIL_FLAG)")
