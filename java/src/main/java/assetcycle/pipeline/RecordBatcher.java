package assetcycle.pipeline;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.typeinfo.BasicArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Gathers source records {@code Row(position, raw)} into batches {@code Row(positions[], raws[])}, so
 * that records cross into the Python operators a batch at a time instead of one by one.
 *
 * <p>A batch is emitted, in arrival order, when it holds {@code maxRecords} records, when
 * {@code maxDelayMs} of processing time have passed since its first record, before every checkpoint
 * barrier (so the operator holds nothing in a checkpoint and needs no state), before every watermark
 * it forwards (a watermark never overtakes a buffered record) and at end of input. Nothing is
 * reordered, dropped or duplicated; an empty buffer emits nothing. The job uses 32,768 records and
 * 100 ms: large enough to amortise the Python crossing, short enough for second-level latency.
 */
public final class RecordBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {

    private static final long serialVersionUID = 1L;

    private static final TypeInformation<Row> BATCH_TYPE =
            Types.ROW_NAMED(
                    new String[] {"positions", "raws"},
                    BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO,
                    BasicArrayTypeInfo.STRING_ARRAY_TYPE_INFO);

    private final int maxRecords;
    private final long maxDelayMs;

    private transient List<String> positions;
    private transient List<String> raws;
    /** Bumped at every flush, so a timer set for an earlier batch does nothing. */
    private transient long generation;

    /**
     * @param maxRecords records per batch at most (at least 1)
     * @param maxDelayMs processing time a record waits in the buffer at most (at least 1 ms)
     */
    public RecordBatcher(int maxRecords, long maxDelayMs) {
        if (maxRecords < 1 || maxDelayMs < 1) {
            throw new IllegalArgumentException(
                    "RecordBatcher needs maxRecords >= 1 and maxDelayMs >= 1, got "
                            + maxRecords + ", " + maxDelayMs);
        }
        this.maxRecords = maxRecords;
        this.maxDelayMs = maxDelayMs;
    }

    /** The batches' type, {@code ROW<positions ARRAY<STRING>, raws ARRAY<STRING>>} (string arrays). */
    public static TypeInformation<Row> outputType() {
        return BATCH_TYPE;
    }

    @Override
    public void open() throws Exception {
        super.open();
        positions = new ArrayList<>(maxRecords);
        raws = new ArrayList<>(maxRecords);
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row record = element.getValue();
        if (positions.isEmpty()) {
            long due = generation;
            getProcessingTimeService()
                    .registerTimer(
                            getProcessingTimeService().getCurrentProcessingTime() + maxDelayMs,
                            time -> {
                                if (generation == due) {
                                    flush();
                                }
                            });
        }
        positions.add((String) record.getField(0));
        raws.add((String) record.getField(1));
        if (positions.size() >= maxRecords) {
            flush();
        }
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flush();
        super.processWatermark(mark);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void endInput() {
        flush();
    }

    @Override
    public void finish() throws Exception {
        flush();
        super.finish();
    }

    private void flush() {
        if (positions.isEmpty()) {
            return;
        }
        generation++;
        Row batch = Row.of(positions.toArray(new String[0]), raws.toArray(new String[0]));
        positions.clear();
        raws.clear();
        output.collect(new StreamRecord<>(batch));
    }
}
