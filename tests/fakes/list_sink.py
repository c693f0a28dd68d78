"""A sink that keeps the batches it is given, for feeds run in-process."""
from kcing.sinks.batching import LOGSTASH_SEPARATOR
from kcing.sinks.encoding import logstash_json


class ListSink:
    name = "list"
    # What LogstashSink makes of documents, kept instead of posted.
    encode = staticmethod(logstash_json)
    separator = LOGSTASH_SEPARATOR

    def __init__(self):
        self.batches = []

    def send(self, batch):
        self.batches.append(batch)
