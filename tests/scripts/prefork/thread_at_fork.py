"""A shared-import whose at-fork hook (before the fork) starts a thread:
the zygote is single-threaded between requests, but not at the fork."""
import os
import threading
import time


def _start():
    threading.Thread(target=time.sleep, args=(30,), name="at-fork-thread", daemon=True).start()


os.register_at_fork(before=_start)
