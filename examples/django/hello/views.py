"""The hello app's views: plain text, a JSON page (about 2 KB), and a slow
view to watch a graceful stop finish a request. None touches the database,
so the project serves without `migrate`."""
import time

from django.http import HttpResponse, JsonResponse

# Built once at import (podmaster's zygote imports the project before it
# forks), shared copy-on-write by every worker.
ITEMS = [
    {
        'id': i,
        'sku': f'SKU-{i:05d}',
        'name': f'Item number {i}',
        'price_cents': 199 + 37 * i,
        'in_stock': i % 3 != 0,
        'tags': ['example', 'django', f'group-{i % 4}'],
    }
    for i in range(1, 17)
]


def index(request):
    return HttpResponse('Hello, World!', content_type='text/plain; charset=utf-8')


def hello(request, name):
    return HttpResponse(f'Hello, {name}!', content_type='text/plain; charset=utf-8')


def items(request):
    return JsonResponse({'page': 1, 'per_page': len(ITEMS), 'total': len(ITEMS), 'items': ITEMS})


def slow(request):
    try:
        seconds = min(float(request.GET.get('s', '1')), 10.0)
    except ValueError:
        seconds = 1.0
    time.sleep(seconds)
    return HttpResponse(f'slept {seconds:g}', content_type='text/plain; charset=utf-8')
