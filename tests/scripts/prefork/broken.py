"""A shared-import that fails at import time."""
raise RuntimeError("broken at import (shared-import test)")
