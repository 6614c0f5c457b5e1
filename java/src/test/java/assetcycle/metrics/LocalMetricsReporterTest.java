package assetcycle.metrics;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.ServiceLoader;
import java.util.UUID;

import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.MeterView;
import org.apache.flink.metrics.MetricConfig;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.metrics.SimpleCounter;
import org.apache.flink.metrics.reporter.MetricReporterFactory;
import org.apache.flink.metrics.util.TestHistogram;
import org.apache.flink.metrics.util.TestMetricGroup;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The local runs' reporter: the job's own metrics summed for the console, and the Prometheus endpoint. */
class LocalMetricsReporterTest {

    private final String job = "job-" + UUID.randomUUID();
    private final LocalMetricsReporter reporter = new LocalMetricsReporter();

    @AfterEach
    void release() {
        reporter.close();
        LocalMetricsReporter.release(job);
    }

    /** A subtask's group at {@code tm.job.op.<subtask>.<path>}. */
    private MetricGroup group(String jobId, int subtask, String path) {
        String scope = "localhost.taskmanager.tm1." + jobId + ".process." + subtask + (path.isEmpty() ? "" : "." + path);
        return TestMetricGroup.newBuilder()
                .setVariables(Map.of("<job_id>", jobId, "<subtask_index>", String.valueOf(subtask),
                        "<task_name>", "process \"cycles\"\nnow"))
                .setMetricIdentifierFunction((name, filter) -> scope + "." + name)
                .setLogicalScopeFunction((filter, delimiter) -> "taskmanager" + delimiter.orElse('.') + "job"
                        + delimiter.orElse('.') + "task" + delimiter.orElse('.') + "operator")
                .build();
    }

    private void add(MetricGroup group, String name, org.apache.flink.metrics.Metric metric) {
        reporter.notifyOfAddedMetric(metric, name, group);
    }

    private static Counter counter(long count) {
        Counter counter = new SimpleCounter();
        counter.inc(count);
        return counter;
    }

    @Test
    void ownMetricPathsBecomeNamesWithLabels() {
        assertEquals("pointsIn", LocalMetricsReporter.ownKey("pointsIn"));
        assertEquals("deadLetters{reason=LATE}", LocalMetricsReporter.ownKey("reason.LATE.deadLetters"));
        assertEquals("sinkRetries{sink=cycles,table=final}",
                LocalMetricsReporter.ownKey("sink.cycles.table.final.sinkRetries"));
    }

    @Test
    void theSnapshotSumsCountersOverSubtasksAndTakesTheHighestGauge() {
        reporter.open(new MetricConfig());
        add(group(job, 0, "kinesisanalytics.assetCycle.reason.LATE"), "deadLetters", counter(3));
        add(group(job, 1, "kinesisanalytics.assetCycle.reason.LATE"), "deadLetters", counter(4));
        add(group(job, 0, "kinesisanalytics.assetCycle.reason.GAP"), "deadLetters", counter(1));
        add(group(job, 0, "kinesisanalytics.assetCycle"), "watermarkLagMs", (Gauge<Long>) () -> 1_500L);
        add(group(job, 1, "kinesisanalytics.assetCycle"), "watermarkLagMs", (Gauge<Long>) () -> 2_500L);
        add(group(job, 0, "kinesisanalytics.assetCycle"), "healthy", (Gauge<Boolean>) () -> true);
        add(group(job, 0, "kinesisanalytics.assetCycle"), "lastTruck", (Gauge<String>) () -> "T1");
        add(group(job, 0, ""), "numRecordsIn", counter(100)); // Flink's own: not part of the snapshot
        add(group("other-" + job, 0, "kinesisanalytics.assetCycle"), "pointsIn", counter(9));
        try {
            assertEquals(Map.of("deadLetters{reason=LATE}", 7.0, "deadLetters{reason=GAP}", 1.0,
                    "watermarkLagMs", 2_500.0, "healthy", 1.0), LocalMetricsReporter.snapshot(job));
        } finally {
            LocalMetricsReporter.release("other-" + job);
        }
    }

    @Test
    void countersOfEndedTasksKeepTheirLastValue() {
        reporter.open(new MetricConfig());
        MetricGroup first = group(job, 0, "kinesisanalytics.assetCycle");
        Counter ended = counter(5);
        Gauge<Long> gauge = () -> 42L;
        add(first, "pointsIn", ended);
        add(first, "watermarkLagMs", gauge);
        add(group(job, 1, "kinesisanalytics.assetCycle"), "pointsIn", counter(2));
        reporter.notifyOfRemovedMetric(ended, "pointsIn", first);
        reporter.notifyOfRemovedMetric(gauge, "watermarkLagMs", first);
        ended.inc(1_000); // after removal: not counted
        assertEquals(Map.of("pointsIn", 7.0), LocalMetricsReporter.snapshot(job));

        LocalMetricsReporter.release(job);
        assertEquals(Map.of(), LocalMetricsReporter.snapshot(job));
    }

    @Test
    void valuesOfEveryKindOfMetric() {
        assertEquals(3.0, LocalMetricsReporter.valueOf(counter(3)));
        assertEquals(2.5, LocalMetricsReporter.valueOf((Gauge<Double>) () -> 2.5));
        assertEquals(0.0, LocalMetricsReporter.valueOf((Gauge<Boolean>) () -> false));
        assertTrue(Double.isNaN(LocalMetricsReporter.valueOf((Gauge<String>) () -> "x")));
        assertEquals(0.0, LocalMetricsReporter.valueOf(new MeterView(60)));
        TestHistogram histogram = new TestHistogram();
        histogram.setCount(12);
        assertEquals(12.0, LocalMetricsReporter.valueOf(histogram));
    }

    private static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        }
    }

    private static String scrape(int port) throws Exception {
        HttpResponse<String> response = HttpClient.newHttpClient().send(
                HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/metrics")).build(),
                HttpResponse.BodyHandlers.ofString());
        assertEquals(200, response.statusCode());
        assertTrue(response.headers().firstValue("Content-Type").orElse("").startsWith("text/plain; version=0.0.4"));
        return response.body();
    }

    @Test
    void everyMetricIsServedInThePrometheusTextFormat() throws Exception {
        int port = freePort();
        MetricConfig config = new MetricConfig();
        config.setProperty("port", String.valueOf(port));
        reporter.open(config);
        MetricGroup group = group(job, 0, "");
        Counter records = counter(5);
        add(group, "numRecordsIn", records);
        add(group, "busy-ratio", (Gauge<Double>) () -> 0.5);
        add(group, "name", (Gauge<String>) () -> "not a number");
        TestHistogram histogram = new TestHistogram();
        histogram.setCount(3);
        add(group, "latency", histogram);

        String text = scrape(port);
        String labels = "job_id=\"" + job + "\",subtask_index=\"0\",task_name=\"process \\\"cycles\\\"\\nnow\"";
        List<String> lines = List.of(text.split("\n"));
        assertTrue(lines.contains("# TYPE flink_taskmanager_job_task_operator_numRecordsIn gauge"), text);
        assertTrue(lines.contains("flink_taskmanager_job_task_operator_numRecordsIn{" + labels + "} 5.0"), text);
        assertTrue(lines.contains("flink_taskmanager_job_task_operator_busy_ratio{" + labels + "} 0.5"), text);
        assertTrue(lines.contains("# TYPE flink_taskmanager_job_task_operator_latency summary"), text);
        assertTrue(lines.contains("flink_taskmanager_job_task_operator_latency{" + labels + ",quantile=\"0.99\"} "
                + histogram.getStatistics().getQuantile(0.99)), text);
        assertTrue(lines.contains("flink_taskmanager_job_task_operator_latency_count{" + labels + "} 3.0"), text);
        assertFalse(text.contains("not a number") || text.contains("_name{"), "a gauge that is no number is left out");

        reporter.notifyOfRemovedMetric(records, "numRecordsIn", group);
        assertFalse(scrape(port).contains("numRecordsIn"));
    }

    @Test
    void theFactoryIsRegisteredAsAFlinkReporterFactory() {
        List<MetricReporterFactory> found = new ArrayList<>();
        ServiceLoader.load(MetricReporterFactory.class).forEach(found::add);
        MetricReporterFactory factory = found.stream().filter(f -> f instanceof LocalMetricsReporterFactory)
                .findFirst().orElseThrow();
        assertInstanceOf(LocalMetricsReporter.class, factory.createMetricReporter(new Properties()));
    }
}
