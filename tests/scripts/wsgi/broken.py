"""A WSGI app that fails at import: startup must stop with this traceback."""
import json

raise ImportError("broken_app_marker: this app cannot start")

application = None
