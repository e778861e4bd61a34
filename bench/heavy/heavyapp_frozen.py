"""Reference only (bench.py row 10): what the zygote does, done by hand in
uWSGI's master: `--shared-import heavyapp_frozen` imports heavyapp, then
runs a full collection and gc.freeze() before uWSGI forks the workers, so
the workers' collections skip the registry and leave its pages shared."""
import gc

import heavyapp  # noqa: F401

gc.collect()
gc.freeze()
