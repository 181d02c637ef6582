package org.smarttags.launcher;

import java.util.Collection;

import org.opensearch.env.Environment;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

/**
 * An OpenSearch node whose plugins come from the classpath instead of a plugins/ directory.
 *
 * <p>Node's own public constructor only loads plugins installed under {@code path.home/plugins}; the
 * protected one also takes plugin classes, which is how OpenSearch's test framework starts nodes too.
 * Classpath plugins are registered under their class name (that is what {@code _cat/plugins} shows).
 */
final class EmbeddedNode extends Node {

    EmbeddedNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
        // forbidPrivateIndexSettings=true: behave like a production node, not a test node.
        super(environment, plugins, true);
    }
}
