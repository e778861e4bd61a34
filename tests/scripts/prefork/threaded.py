"""A shared-import that starts a thread at import time (refused by the zygote)."""
import threading
import time

threading.Thread(target=time.sleep, args=(60,), name="bg-poller", daemon=True).start()
