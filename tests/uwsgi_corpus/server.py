"""The corpus's worker: never run, only checked to exist."""
import uwsgi

uwsgi.accepting()
