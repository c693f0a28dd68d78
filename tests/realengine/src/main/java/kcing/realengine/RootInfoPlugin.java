package kcing.realengine;

import java.io.IOException;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Predicate;
import java.util.function.Supplier;

import org.elasticsearch.Build;
import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.cluster.ClusterState;
import org.elasticsearch.cluster.ClusterStateUpdateTask;
import org.elasticsearch.cluster.metadata.DataStream;
import org.elasticsearch.cluster.metadata.IndexNameExpressionResolver;
import org.elasticsearch.cluster.metadata.Metadata;
import org.elasticsearch.cluster.metadata.MetadataDeleteIndexService;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.io.stream.NamedWriteableRegistry;
import org.elasticsearch.common.settings.ClusterSettings;
import org.elasticsearch.common.settings.IndexScopedSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.settings.SettingsFilter;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.index.Index;
import org.elasticsearch.index.IndexNotFoundException;
import org.elasticsearch.index.IndexVersion;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.xcontent.XContentBuilder;

/**
 * `GET /` and `HEAD /`, the node's identity, as a packaged Elasticsearch serves them from its
 * rest-root module (which is not published as an artifact). Clients read the version from it.
 * And `DELETE /_data_stream/<name>`, which a packaged node's data-streams module (not published
 * either) serves: a test that made a data stream removes it, and the template it keeps in use.
 */
public class RootInfoPlugin extends Plugin implements ActionPlugin {

    private volatile ClusterService clusterService;
    private volatile Settings nodeSettings;

    @Override
    public Collection<?> createComponents(PluginServices services) {
        clusterService = services.clusterService();
        nodeSettings = services.environment().settings();
        return List.of();
    }

    @Override
    public Collection<RestHandler> getRestHandlers(Settings settings, NamedWriteableRegistry registry,
            RestController controller, ClusterSettings clusterSettings, IndexScopedSettings indexScopedSettings,
            SettingsFilter settingsFilter, IndexNameExpressionResolver resolver, Supplier<DiscoveryNodes> nodes,
            Predicate<NodeFeature> clusterSupportsFeature) {
        return List.of(new RootHandler(), new DeleteDataStreamHandler());
    }

    /** Removes one data stream, then deletes its backing indices, as the data-streams module does. */
    private final class DeleteDataStreamHandler extends BaseRestHandler {

        @Override
        public String getName() {
            return "kcing_realengine_delete_data_stream";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.DELETE, "/_data_stream/{name}"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
            String name = request.param("name");
            return channel -> clusterService.submitUnbatchedStateUpdateTask("kcing-realengine delete data stream [" + name + "]",
                new ClusterStateUpdateTask() {
                    @Override
                    public ClusterState execute(ClusterState current) {
                        DataStream stream = current.metadata().dataStreams().get(name);
                        if (stream == null) {
                            throw new IndexNotFoundException(name);
                        }
                        Set<Index> backing = new HashSet<>(stream.getIndices());
                        backing.addAll(stream.getFailureIndices().getIndices());
                        ClusterState without = ClusterState.builder(current)
                            .metadata(Metadata.builder(current.metadata()).removeDataStream(name)).build();
                        return MetadataDeleteIndexService.deleteIndices(without, backing, nodeSettings);
                    }

                    @Override
                    public void onFailure(Exception failure) {
                        try {
                            channel.sendResponse(new RestResponse(channel, failure));
                        } catch (IOException unsent) {
                            failure.addSuppressed(unsent);
                        }
                    }

                    @Override
                    public void clusterStateProcessed(ClusterState before, ClusterState after) {
                        try {
                            XContentBuilder body = channel.newBuilder();
                            body.startObject().field("acknowledged", true).endObject();
                            channel.sendResponse(new RestResponse(RestStatus.OK, body));
                        } catch (IOException unsent) {
                            onFailure(unsent);
                        }
                    }
                });
        }
    }

    private final class RootHandler extends BaseRestHandler {

        @Override
        public String getName() {
            return "kcing_realengine_root";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
            return channel -> {
                ClusterState state = clusterService.state();
                Build build = Build.current();
                XContentBuilder body = channel.newBuilder();
                body.startObject();
                body.field("name", clusterService.getNodeName());
                body.field("cluster_name", state.getClusterName().value());
                body.field("cluster_uuid", state.metadata().clusterUUID());
                body.startObject("version")
                    .field("number", build.qualifiedVersion())
                    .field("build_flavor", build.flavor())
                    .field("build_type", build.type().displayName())
                    .field("build_hash", build.hash())
                    .field("build_date", build.date())
                    .field("build_snapshot", build.isSnapshot())
                    .field("lucene_version", IndexVersion.current().luceneVersion().toString())
                    .field("minimum_wire_compatibility_version", build.minWireCompatVersion())
                    .field("minimum_index_compatibility_version", build.minIndexCompatVersion())
                    .endObject();
                body.field("tagline", "You Know, for Search");
                body.endObject();
                channel.sendResponse(new RestResponse(RestStatus.OK, body));
            };
        }
    }
}
