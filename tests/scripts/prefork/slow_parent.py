"""A shared-import whose at-fork hook (the zygote's side, after the fork)
sleeps 3 s once $SLOW_FLAG exists: longer than the master waits for the
zygote's answer, so the fork request fails after the worker exists."""
import os
import time


def _slow():
    flag = os.environ.get("SLOW_FLAG")
    if flag and os.path.exists(flag):
        time.sleep(3)


os.register_at_fork(after_in_parent=_slow)
