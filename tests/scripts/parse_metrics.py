"""Parses OpenMetrics text from stdin with prometheus_client's parser (a
malformed exposition raises); prints family name, type and sample count."""
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for fam in text_string_to_metric_families(sys.stdin.read()):
    assert fam.documentation, f"{fam.name} has no help text"
    print(fam.name, fam.type, len(fam.samples))
