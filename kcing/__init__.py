"""kcing: feed KernelCI results into Elasticsearch through Logstash."""

__version__ = "1.0.0"
