package assetcycle.metrics;

import com.sun.net.httpserver.HttpServer;
import org.apache.flink.metrics.CharacterFilter;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.Histogram;
import org.apache.flink.metrics.HistogramStatistics;
import org.apache.flink.metrics.LogicalScopeProvider;
import org.apache.flink.metrics.Meter;
import org.apache.flink.metrics.Metric;
import org.apache.flink.metrics.MetricConfig;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.metrics.reporter.MetricReporter;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;

/**
 * Metric reporter of local runs (the minicluster inside the PyFlink gateway JVM). Two jobs:
 *
 * <ul>
 *   <li>{@link #snapshot(String)}: the job's own metrics (group {@code kinesisanalytics.assetCycle})
 *       summed over subtasks, for the {@code asset-cycle run} console. Counters of finished or
 *       failed tasks keep their last value, so a bounded run can still be summed up after its tasks
 *       have ended (Flink drops a task's metrics when it finishes).</li>
 *   <li>With option {@code port}: every Flink metric in the Prometheus text format on
 *       {@code http://host:port/metrics}, named and labelled like Flink's own Prometheus reporter,
 *       but bound to {@code host} (default 127.0.0.1) instead of every interface.</li>
 * </ul>
 */
public final class LocalMetricsReporter implements MetricReporter {
    private static final Logger LOG = LoggerFactory.getLogger(LocalMetricsReporter.class);
    private static final String OWN_GROUP = ".kinesisanalytics.assetCycle.";
    private static final Pattern INVALID = Pattern.compile("[^a-zA-Z0-9:_]");
    private static final CharacterFilter FILTER = s -> INVALID.matcher(s).replaceAll("_");
    private static final Map<String, JobMetrics> JOBS = new ConcurrentHashMap<>();

    private final Map<Metric, Exported> exported = new ConcurrentHashMap<>();
    private HttpServer server;

    /** {@code key -> value} of a job's metrics: {@code name} or {@code name{label=value}}, summed. */
    public static Map<String, Double> snapshot(String jobId) {
        JobMetrics job = JOBS.get(jobId);
        return job == null ? new TreeMap<>() : job.snapshot();
    }

    /** Forget a job's metrics (when its run is over). */
    public static void release(String jobId) {
        JOBS.remove(jobId);
    }

    @Override
    public void open(MetricConfig config) {
        String port = config.getString("port", "");
        if (port.isEmpty()) {
            return;
        }
        String host = config.getString("host", "127.0.0.1");
        try {
            server = HttpServer.create(new InetSocketAddress(host, Integer.parseInt(port)), 16);
        } catch (IOException e) {
            throw new IllegalStateException("cannot serve metrics on " + host + ":" + port + ": " + e.getMessage(), e);
        }
        server.createContext("/metrics", exchange -> {
            byte[] body = prometheusText().getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.start();
        LOG.info("Prometheus metrics on http://{}:{}/metrics", host, port);
    }

    @Override
    public void close() {
        if (server != null) {
            server.stop(0);
        }
    }

    @Override
    public void notifyOfAddedMetric(Metric metric, String metricName, MetricGroup group) {
        if (server != null) {
            exported.put(metric, new Exported(metricName, group));
        }
        String identifier = group.getMetricIdentifier(metricName);
        int own = identifier.indexOf(OWN_GROUP);
        String jobId = group.getAllVariables().get("<job_id>");
        if (own >= 0 && jobId != null) {
            String key = ownKey(identifier.substring(own + OWN_GROUP.length()));
            JOBS.computeIfAbsent(jobId, id -> new JobMetrics()).added(metric, key);
        }
    }

    @Override
    public void notifyOfRemovedMetric(Metric metric, String metricName, MetricGroup group) {
        exported.remove(metric);
        String jobId = group.getAllVariables().get("<job_id>");
        JobMetrics job = jobId == null ? null : JOBS.get(jobId);
        if (job != null) {
            job.removed(metric);
        }
    }

    /** {@code reason.LATE.deadLetters} -> {@code deadLetters{reason=LATE}}. */
    static String ownKey(String path) {
        String[] parts = path.split("\\.");
        StringBuilder labels = new StringBuilder();
        for (int i = 0; i + 1 < parts.length; i += 2) {
            labels.append(labels.length() == 0 ? "{" : ",").append(parts[i]).append('=').append(parts[i + 1]);
        }
        String name = parts[parts.length - 1];
        return labels.length() == 0 ? name : name + labels + "}";
    }

    static double valueOf(Metric metric) {
        if (metric instanceof Counter) {
            return ((Counter) metric).getCount();
        }
        if (metric instanceof Gauge) {
            Object value = ((Gauge<?>) metric).getValue();
            if (value instanceof Number) {
                return ((Number) value).doubleValue();
            }
            if (value instanceof Boolean) {
                return (Boolean) value ? 1 : 0;
            }
            return Double.NaN;
        }
        if (metric instanceof Meter) {
            return ((Meter) metric).getRate();
        }
        if (metric instanceof Histogram) {
            return ((Histogram) metric).getCount();
        }
        return Double.NaN;
    }

    private String prometheusText() {
        Map<String, StringBuilder> families = new TreeMap<>();
        for (Map.Entry<Metric, Exported> entry : exported.entrySet()) {
            Metric metric = entry.getKey();
            Exported e = entry.getValue();
            if (metric instanceof Histogram) {
                HistogramStatistics stats = ((Histogram) metric).getStatistics();
                StringBuilder out = families.computeIfAbsent(e.name + "\tsummary", k -> new StringBuilder());
                for (double q : new double[] {0.5, 0.75, 0.95, 0.98, 0.99, 0.999}) {
                    sample(out, e.name, e.labels + (e.labels.isEmpty() ? "" : ",") + "quantile=\"" + q + "\"",
                            stats.getQuantile(q));
                }
                sample(families.computeIfAbsent(e.name + "_count\tgauge", k -> new StringBuilder()),
                        e.name + "_count", e.labels, ((Histogram) metric).getCount());
                continue;
            }
            double value = valueOf(metric);
            if (!Double.isNaN(value)) {
                sample(families.computeIfAbsent(e.name + "\tgauge", k -> new StringBuilder()), e.name, e.labels, value);
            }
        }
        StringBuilder text = new StringBuilder();
        for (Map.Entry<String, StringBuilder> family : families.entrySet()) {
            String[] nameAndType = family.getKey().split("\t");
            text.append("# TYPE ").append(nameAndType[0]).append(' ').append(nameAndType[1]).append('\n');
            text.append(family.getValue());
        }
        return text.toString();
    }

    private static void sample(StringBuilder out, String name, String labels, double value) {
        out.append(name);
        if (!labels.isEmpty()) {
            out.append('{').append(labels).append('}');
        }
        out.append(' ').append(value).append('\n');
    }

    /** A metric's Prometheus name and label text, fixed when it is registered. */
    private static final class Exported {
        final String name;
        final String labels;

        Exported(String metricName, MetricGroup group) {
            String scope = group instanceof LogicalScopeProvider
                    ? ((LogicalScopeProvider) group).getLogicalScope(FILTER, '_') : FILTER.filterCharacters(
                    group.getMetricIdentifier(""));
            this.name = "flink_" + scope + "_" + FILTER.filterCharacters(metricName);
            StringBuilder labels = new StringBuilder();
            for (Map.Entry<String, String> variable : new TreeMap<>(group.getAllVariables()).entrySet()) {
                String key = FILTER.filterCharacters(variable.getKey().replaceAll("^<|>$", ""));
                labels.append(labels.length() == 0 ? "" : ",").append(key).append("=\"")
                        .append(escape(variable.getValue())).append('"');
            }
            this.labels = labels.toString();
        }

        private static String escape(String value) {
            return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n");
        }
    }

    /** One job's own metrics: live ones by key, and the last values of counters already removed. */
    private static final class JobMetrics {
        private final Map<Metric, String> live = new ConcurrentHashMap<>();
        private final Map<String, Double> ended = new ConcurrentHashMap<>();

        void added(Metric metric, String key) {
            live.put(metric, key);
        }

        void removed(Metric metric) {
            String key = live.remove(metric);
            if (key != null && metric instanceof Counter) {
                ended.merge(key, (double) ((Counter) metric).getCount(), Double::sum);
            }
        }

        Map<String, Double> snapshot() {
            Map<String, Double> out = new TreeMap<>(ended);
            Map<String, Double> gauges = new HashMap<>();
            for (Map.Entry<Metric, String> entry : live.entrySet()) {
                double value = valueOf(entry.getKey());
                if (Double.isNaN(value)) {
                    continue;
                }
                if (entry.getKey() instanceof Counter) {
                    out.merge(entry.getValue(), value, Double::sum);
                } else {
                    gauges.merge(entry.getValue(), value, Math::max); // gauges: the highest subtask
                }
            }
            out.putAll(gauges);
            return out;
        }
    }
}
