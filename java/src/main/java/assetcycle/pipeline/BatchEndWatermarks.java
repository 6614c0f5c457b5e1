package assetcycle.pipeline;

import org.apache.flink.api.common.eventtime.TimestampAssigner;
import org.apache.flink.api.common.eventtime.TimestampAssignerSupplier;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkGeneratorSupplier;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.types.Row;

/**
 * Event time for the parse operator's per-truck rows, with watermarks only at batch ends.
 *
 * <p>The fields are read from the record itself or, with {@code valueField >= 0}, from the row nested in
 * that field (PyFlink's keyed records are {@code (key, value)}). Each record's timestamp is its
 * {@code tsField} (a {@code Long}; {@code Long.MIN_VALUE} when null). The generator keeps the largest timestamp seen and, on a row whose {@code endField} is {@code TRUE}
 * (the last row a batch produced), emits {@code max - outOfOrdernessMs - 1} when that is above the
 * last watermark emitted: the formula of {@code state_machine/watermark.py}. It emits nothing
 * periodically, so a watermark can never overtake rows of the batch it follows. Composes with
 * {@link #withIdleness}.
 */
public final class BatchEndWatermarks implements WatermarkStrategy<Row> {

    private static final long serialVersionUID = 1L;

    private final int valueField;
    private final int tsField;
    private final int endField;
    private final long outOfOrdernessMs;

    /**
     * @param valueField index of the nested row that holds the two fields, or -1 for the record itself
     * @param tsField index of the row's event-time field (BIGINT)
     * @param endField index of the row's batch-end flag (BOOLEAN)
     * @param outOfOrdernessMs how far the watermark stays behind the largest timestamp (at least 0)
     */
    public BatchEndWatermarks(int valueField, int tsField, int endField, long outOfOrdernessMs) {
        if (outOfOrdernessMs < 0) {
            throw new IllegalArgumentException("outOfOrdernessMs must be >= 0, got " + outOfOrdernessMs);
        }
        this.valueField = valueField;
        this.tsField = tsField;
        this.endField = endField;
        this.outOfOrdernessMs = outOfOrdernessMs;
    }

    @Override
    public TimestampAssigner<Row> createTimestampAssigner(TimestampAssignerSupplier.Context context) {
        return (row, previous) -> {
            Object ts = value(valueField, row).getField(tsField);
            return ts == null ? Long.MIN_VALUE : (Long) ts;
        };
    }

    @Override
    public WatermarkGenerator<Row> createWatermarkGenerator(WatermarkGeneratorSupplier.Context context) {
        return new Generator(valueField, endField, outOfOrdernessMs);
    }

    private static Row value(int valueField, Row record) {
        return valueField < 0 ? record : (Row) record.getField(valueField);
    }

    /** Tracks the largest timestamp; emits a watermark at batch ends only. */
    static final class Generator implements WatermarkGenerator<Row> {
        private final int valueField;
        private final int endField;
        private final long outOfOrdernessMs;
        private long maxTimestamp = Long.MIN_VALUE;
        private long lastEmitted = Long.MIN_VALUE;

        Generator(int valueField, int endField, long outOfOrdernessMs) {
            this.valueField = valueField;
            this.endField = endField;
            this.outOfOrdernessMs = outOfOrdernessMs;
        }

        @Override
        public void onEvent(Row row, long eventTimestamp, WatermarkOutput output) {
            maxTimestamp = Math.max(maxTimestamp, eventTimestamp);
            if (Boolean.TRUE.equals(value(valueField, row).getField(endField)) && maxTimestamp != Long.MIN_VALUE) {
                long candidate = maxTimestamp - outOfOrdernessMs - 1;
                if (candidate > lastEmitted) {
                    lastEmitted = candidate;
                    output.emitWatermark(new Watermark(candidate));
                }
            }
        }

        @Override
        public void onPeriodicEmit(WatermarkOutput output) {
            // watermarks only at batch ends
        }
    }
}
