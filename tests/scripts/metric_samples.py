"""Parses OpenMetrics text from stdin with prometheus_client's parser (a
malformed exposition raises) and prints every sample as JSON:
[[family, type, name, labels, value], ...]."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    assert fam.documentation, f"{fam.name} has no help text"
    for s in fam.samples:
        out.append([fam.name, fam.type, s.name, s.labels, s.value])
json.dump(out, sys.stdout)
