"""Administration: Elasticsearch templates and retention, the Logstash pipeline entry, Kibana objects."""
