"""A worker that switches between accepting and not 300 times, then stays
accepting (for the log-flood test)."""

import time

import uwsgi

for _ in range(300):
    uwsgi.accepting(True)
    uwsgi.accepting(False)
uwsgi.accepting(True)
with open(__import__("os").environ["FLAP_DONE"], "w") as f:
    f.write("done")
while True:
    time.sleep(3600)
