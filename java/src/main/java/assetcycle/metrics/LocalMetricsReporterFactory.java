package assetcycle.metrics;

import org.apache.flink.metrics.reporter.MetricReporter;
import org.apache.flink.metrics.reporter.MetricReporterFactory;

import java.util.Properties;

/** {@code metrics.reporter.<name>.factory.class} of {@link LocalMetricsReporter}. */
public final class LocalMetricsReporterFactory implements MetricReporterFactory {
    @Override
    public MetricReporter createMetricReporter(Properties properties) {
        return new LocalMetricsReporter();
    }
}
