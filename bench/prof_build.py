import sys, tempfile, cProfile, pstats, time, json
from pathlib import Path
sys.path.insert(0, "/work/wt-build/bench"); sys.path.insert(0, "/work/wt-build")
import feed_throughput as fb
from kcing.building import encoded_documents
from kcing.sinks.logstash import LogstashSink
corpus = fb.legacy_corpus(int(sys.argv[1]) if len(sys.argv) > 1 else 50, 1000)
with tempfile.TemporaryDirectory() as d:
    files = fb.materialise(corpus, Path(d))
    manifest = fb.corpus_manifest(corpus, files)
    from datetime import datetime
    items = [(e["kind"], Path(e["path"]).read_bytes(), datetime.fromisoformat(e["created"])) for e in manifest]
def run():
    n = 0
    for kind, content, created in items:
        b = encoded_documents(kind, content, created, None, LogstashSink.encode)
        n += len(b.items)
    return n
t = time.process_time(); n = run(); print("build CPU %.2f s for %d objects, %d docs, %.1f us/doc" % (time.process_time()-t, len(items), n, 1e6*(time.process_time()-t)/n))
if "--prof" in sys.argv:
    p = cProfile.Profile(time.process_time); p.enable(); run(); p.disable()
    pstats.Stats(p).sort_stats("tottime").print_stats(35)
