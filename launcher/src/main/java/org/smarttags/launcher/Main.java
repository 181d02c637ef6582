package org.smarttags.launcher;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.ServiceLoader;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.Build;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.ExtensiblePlugin;
import org.opensearch.plugins.Plugin;

/**
 * Starts one single-node OpenSearch cluster bound to 127.0.0.1, for development and tests.
 *
 * <pre>
 * java -cp 'target/classes:target/lib/*:target/knn/*' org.smarttags.launcher.Main \
 *     --home DIR [--http-port 9200] [--transport-port 9300] [--cluster-name smarttags] [-E key=value]...
 * </pre>
 *
 * DIR holds config/, data/ and logs/. The process runs until SIGTERM/SIGINT, then closes the node cleanly.
 * On success it prints one line "started VERSION http://127.0.0.1:PORT" to stdout.
 */
public final class Main {

    /** The plugins of our stack, as classes; a missing one fails the start loudly. */
    private static final List<String> PLUGIN_CLASSES = List.of(
        "org.opensearch.transport.Netty4Plugin",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "org.opensearch.index.mapper.MapperExtrasPlugin",
        "org.opensearch.painless.PainlessPlugin",
        "org.opensearch.script.mustache.MustachePlugin",
        "org.opensearch.index.reindex.ReindexPlugin",
        "org.opensearch.ingest.common.IngestCommonPlugin",
        "org.opensearch.knn.plugin.KNNPlugin"
    );

    private static final String NODE_NAME = "smarttags-node";

    private Main() {}

    public static void main(String[] args) throws Exception {
        Path home = null;
        int httpPort = 9200;
        int transportPort = 9300;
        String clusterName = "smarttags";
        Settings.Builder extra = Settings.builder();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            String value = i + 1 < args.length ? args[i + 1] : null;
            switch (arg) {
                case "--home" -> home = Path.of(require(arg, value)).toAbsolutePath();
                case "--http-port" -> httpPort = Integer.parseInt(require(arg, value));
                case "--transport-port" -> transportPort = Integer.parseInt(require(arg, value));
                case "--cluster-name" -> clusterName = require(arg, value);
                case "-E" -> {
                    String kv = require(arg, value);
                    int eq = kv.indexOf('=');
                    if (eq < 1) {
                        usage("-E wants key=value, got " + kv);
                    }
                    extra.put(kv.substring(0, eq), kv.substring(eq + 1));
                }
                default -> usage("unknown argument " + arg);
            }
            i++;
        }
        if (home == null) {
            usage("--home is required");
        }

        Path config = home.resolve("config");
        Files.createDirectories(config);
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        installLogConfig(config);

        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", clusterName)
            .put("node.name", NODE_NAME)
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", transportPort)
            .put("discovery.type", "single-node")
            // A dev/test node on a shared disk: don't go read-only when the disk is 90% full.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put(extra.build())
            .build();
        Environment environment = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> NODE_NAME);
        // LogConfigurator redirects System.out/err into the log; keep the real stdout for our one status line.
        PrintStream console = System.out;
        // What Bootstrap does for a packaged node: log4j reads config/log4j2.properties, logs go to path.logs.
        // The %node_name pattern converter needs the name before log4j is configured.
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(settings));
        LogConfigurator.configure(environment);

        // Like a packaged node (Bootstrap): an Error on any thread (OOM, a missing native library of the
        // faiss/nmslib k-NN engines...) stops the JVM loudly instead of leaving a half-dead node that hangs.
        Thread.setDefaultUncaughtExceptionHandler((thread, error) -> {
            if (error instanceof Error) {
                System.err.println("fatal error in thread [" + thread.getName() + "], exiting");
                error.printStackTrace();
                Runtime.getRuntime().halt(1);
            } else {
                System.err.println("uncaught exception in thread [" + thread.getName() + "]");
                error.printStackTrace();
            }
        });

        loadPainlessExtensions();
        Node node = new EmbeddedNode(environment, loadPlugins());
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (IOException | InterruptedException e) {
                System.err.println("error while stopping OpenSearch: " + e);
            } finally {
                stopped.countDown();
            }
        }, "smarttags-shutdown"));
        node.start();
        console.println("started " + Build.CURRENT.getQualifiedVersion() + " http://127.0.0.1:" + httpPort);
        console.flush();
        stopped.await();
    }

    @SuppressWarnings("unchecked")
    private static List<Class<? extends Plugin>> loadPlugins() throws ClassNotFoundException {
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : PLUGIN_CLASSES) {
            plugins.add((Class<? extends Plugin>) Class.forName(name).asSubclass(Plugin.class));
        }
        return plugins;
    }

    /**
     * Gives painless the allowlist extensions of the other plugins (k-NN's vector functions, ingest-common's
     * processors, analysis-common's), as a packaged node has them.
     *
     * <p>PluginsService calls ExtensiblePlugin.loadExtensions only for plugins installed in directories, never
     * for classpath plugins. Painless keeps its allowlists in a static map, so one call here, before the node
     * creates its own PainlessPlugin, is enough.
     */
    private static void loadPainlessExtensions() {
        new PainlessPlugin().loadExtensions(new ExtensiblePlugin.ExtensionLoader() {
            @Override
            public <T> List<T> loadExtensions(Class<T> extensionPointType) {
                List<T> found = new ArrayList<>();
                ServiceLoader.load(extensionPointType, Main.class.getClassLoader()).forEach(found::add);
                return found;
            }
        });
    }

    /** Writes our log4j2.properties into the node's config dir unless someone put their own there. */
    private static void installLogConfig(Path config) throws IOException {
        Path target = config.resolve("log4j2.properties");
        if (Files.exists(target)) {
            return;
        }
        try (InputStream in = Main.class.getResourceAsStream("/log4j2.properties")) {
            if (in == null) {
                throw new IllegalStateException("log4j2.properties missing from the launcher's classpath");
            }
            Files.copy(in, target, StandardCopyOption.REPLACE_EXISTING);
        }
    }

    private static String require(String flag, String value) {
        if (value == null) {
            usage(flag + " needs a value");
        }
        return value;
    }

    private static void usage(String problem) {
        System.err.println("smarttags launcher: " + problem);
        System.err.println(
            "usage: Main --home DIR [--http-port N] [--transport-port N] [--cluster-name NAME] [-E key=value]...");
        System.exit(64);
    }
}
