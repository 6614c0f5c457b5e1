package assetcycle.pipeline;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.eventtime.TimestampAssigner;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkGeneratorSupplier;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.metrics.groups.UnregisteredMetricsGroup;
import org.apache.flink.types.Row;
import org.apache.flink.util.clock.RelativeClock;
import org.apache.flink.util.clock.SystemClock;
import org.junit.jupiter.api.Test;

class BatchEndWatermarksTest {

    /** Watermarks emitted, as timestamps. */
    private static final class Collected implements WatermarkOutput {
        final List<Long> marks = new ArrayList<>();

        @Override
        public void emitWatermark(Watermark watermark) {
            marks.add(watermark.getTimestamp());
        }

        @Override
        public void markIdle() {}

        @Override
        public void markActive() {}
    }

    private static final long LAG = 1_000;

    private static Row row(Long ts, boolean end) {
        return Row.of("truck", ts, end);
    }

    private static List<Long> run(WatermarkStrategy<Row> strategy, List<Row> rows) {
        TimestampAssigner<Row> assigner = strategy.createTimestampAssigner(null);
        WatermarkGenerator<Row> generator = strategy.createWatermarkGenerator(new WatermarkGeneratorSupplier.Context() {
            @Override
            public MetricGroup getMetricGroup() {
                return new UnregisteredMetricsGroup();
            }

            @Override
            public RelativeClock getInputActivityClock() {
                return SystemClock.getInstance();
            }
        });
        Collected out = new Collected();
        for (Row r : rows) {
            generator.onEvent(r, assigner.extractTimestamp(r, Long.MIN_VALUE), out);
            generator.onPeriodicEmit(out);
        }
        return out.marks;
    }

    @Test
    void timestampsComeFromTheRowField() {
        TimestampAssigner<Row> assigner = new BatchEndWatermarks(-1, 1, 2, LAG).createTimestampAssigner(null);
        assertEquals(5_000L, assigner.extractTimestamp(row(5_000L, false), 0));
        assertEquals(Long.MIN_VALUE, assigner.extractTimestamp(row(null, false), 0));
    }

    @Test
    void fieldsCanComeFromTheRowNestedInAKeyedRecord() {
        BatchEndWatermarks strategy = new BatchEndWatermarks(1, 1, 2, LAG);
        assertEquals(5_000L, strategy.createTimestampAssigner(null).extractTimestamp(Row.of("truck", row(5_000L, false)), 0));
        List<Long> marks = run(strategy, List.of(Row.of("truck", row(10_000L, false)), Row.of("truck", row(9_000L, true))));
        assertEquals(List.of(10_000L - LAG - 1), marks);
    }

    @Test
    void watermarksOnlyAtBatchEndsAndNeverBackwards() {
        List<Long> marks = run(new BatchEndWatermarks(-1, 1, 2, LAG), List.of(
                row(10_000L, false), row(12_000L, false), row(11_000L, true), // batch 1: max 12 s
                row(9_000L, true), // batch 2: max stays 12 s, no new watermark
                row(20_000L, false), // no batch end yet
                row(15_000L, true))); // batch 3: max 20 s
        assertEquals(List.of(12_000L - LAG - 1, 20_000L - LAG - 1), marks);
    }

    @Test
    void aBatchEndWithoutTimestampsEmitsNothing() {
        assertEquals(List.of(), run(new BatchEndWatermarks(-1, 1, 2, LAG), List.of(row(null, true))));
    }

    @Test
    void composesWithIdleness() {
        WatermarkStrategy<Row> strategy = new BatchEndWatermarks(-1, 1, 2, LAG).withIdleness(Duration.ofMinutes(1));
        List<Long> marks = run(strategy, List.of(row(10_000L, false), row(11_000L, true)));
        assertEquals(List.of(11_000L - LAG - 1), marks);
    }
}
