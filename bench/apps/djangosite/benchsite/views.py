"""The views of bench row 17: a plain-text hello and a JSON document of
about 2 KB, serialised on every request as a real view would. Neither
touches the database (the session and the user stay lazy).

`/gc` is the bench's hook, not part of the app: three full collections,
answered with the pid and the ms per collection, so that the PSS row reads
memory after every worker has collected (bench.gc_everywhere)."""
import gc
import os
import time

from django.http import HttpResponse, JsonResponse

ITEMS = [{"id": i, "name": f"item {i}", "ok": True} for i in range(48)]


def hello(request):
    return HttpResponse("Hello, World", content_type="text/plain")


def json_view(request):
    return JsonResponse({"items": ITEMS})


def gc_view(request):
    t = time.perf_counter()
    for _ in range(3):
        gc.collect()
    ms = (time.perf_counter() - t) * 1000 / 3
    return JsonResponse({"pid": os.getpid(), "ms_per_collection": ms})
