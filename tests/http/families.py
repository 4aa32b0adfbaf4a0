"""Reads a Prometheus text exposition (0.0.4) from stdin with prometheus_client's parser, the reference
implementation's, and prints every family as JSON: {name: {"type", "help", "samples": [[name, labels,
value]]}}. The parser raises on text it cannot read, which fails the test."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "help": family.documentation,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
json.dump(families, sys.stdout)
