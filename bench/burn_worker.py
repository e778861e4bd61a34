"""A worker that says it accepts and then burns its CPU until stopped: the
load of bench row 9 (the workers themselves saturate every core)."""
import uwsgi

uwsgi.accepting()
while True:
    pass
