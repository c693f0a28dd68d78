package kcing.realengine;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.transport.TransportAddress;
import org.elasticsearch.http.HttpServerTransport;
import org.elasticsearch.node.ClasspathPluginsNode;
import org.elasticsearch.node.Node;
import org.elasticsearch.transport.netty4.Netty4Plugin;

/**
 * One Elasticsearch node on 127.0.0.1 for kcing's tests, run in this JVM.
 *
 * Usage: RealNode HOME_DIR. Data and logs go under HOME_DIR. The node listens on an ephemeral
 * HTTP port; once it answers, the URL is written to HOME_DIR/http.url (and printed), so the test
 * session never races another process for a port. The node stops on SIGTERM or when standard
 * input closes, so it never outlives the test session that started it.
 */
public final class RealNode {

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: RealNode HOME_DIR");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath();
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));

        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "kcing-tests")
            .put("node.name", "kcing-realengine")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "0")
            .put("transport.port", "0")
            // CI disks are often nearly full: shards must stay assignable anyway.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // As a production cluster: deleting indices by wildcard is refused.
            .put("action.destructive_requires_name", true)
            .build();

        // Elasticsearch expects its logging set up before any node class logs.
        LogConfigurator.registerErrorListener();
        LogConfigurator.loadLog4jPlugins();
        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);

        Node node = new ClasspathPluginsNode(settings, List.of(Netty4Plugin.class, RootInfoPlugin.class));
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> closeQuietly(node, stopped)));
        node.start();

        TransportAddress bound = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress();
        String url = "http://127.0.0.1:" + bound.getPort();
        Path urlFile = home.resolve("http.url");
        Path partial = home.resolve("http.url.partial");
        Files.write(partial, (url + "\n").getBytes(StandardCharsets.UTF_8));
        Files.move(partial, urlFile, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        System.out.println("kcing-realengine listening on " + url);
        System.out.flush();

        // The parent keeps our stdin open for as long as it wants the node; EOF means it is gone.
        while (System.in.read() != -1) {
            // ignore anything written to us
        }
        closeQuietly(node, stopped);
        System.exit(0);
    }

    private static synchronized void closeQuietly(Node node, CountDownLatch stopped) {
        if (stopped.getCount() == 0) {
            return;
        }
        try {
            node.close();
        } catch (Exception error) {
            System.err.println("kcing-realengine: error while stopping: " + error);
        } finally {
            stopped.countDown();
        }
    }
}
