package org.elasticsearch.node;

import java.util.Collection;
import java.util.Map;

import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.MockPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsService;

/**
 * A production Node whose plugins are classes on the classpath, as the test framework's MockNode,
 * without touching ESTestCase: its static set-up refuses to run as root, which CI is. Lives in
 * Elasticsearch's package because the construction hooks it uses are package-private.
 */
public class ClasspathPluginsNode extends Node {

    public ClasspathPluginsNode(Settings settings, Collection<Class<? extends Plugin>> plugins) {
        super(NodeConstruction.prepareConstruction(
            InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> settings.get("node.name")),
            new NodeServiceProvider() {
                @Override
                PluginsService newPluginService(Environment environment, Settings nodeSettings) {
                    return new MockPluginsService(nodeSettings, environment, plugins);
                }
            },
            false));
    }
}
