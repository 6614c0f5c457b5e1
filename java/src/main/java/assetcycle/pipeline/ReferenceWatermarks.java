package assetcycle.pipeline;

import org.apache.flink.api.java.tuple.Tuple;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.runtime.watermarkstatus.WatermarkStatus;

/**
 * Event time of the reference-data stream, the second input of the keyed cycle operator, whose
 * watermark is the minimum over its inputs that are not idle.
 *
 * <p>Updates pass through unchanged. Until the first complete load has passed (the record whose
 * {@code kindField} equals {@code loadedKind}, sent after every update of that load), this stream
 * emits no watermark, so the cycle operator's event time stays at {@code Long.MIN_VALUE} and no
 * event-time decision is taken without reference data, however much telemetry a catch-up delivers
 * first. Right after that record the stream declares itself idle, for good: from then on the
 * operator's event time is the telemetry's alone. Watermarks and statuses from upstream (the end of
 * a bounded snapshot, {@code Long.MAX_VALUE}) are not passed on.
 *
 * <p>Why idle and not a watermark at {@code Long.MAX_VALUE - 1}: when every telemetry channel is
 * idle (a reader without a shard, a fleet silent for longer than the source idleness) the operator
 * would take the reference stream's watermark as its event time and treat it as the end of input;
 * with this stream idle too, event time simply stays where it is. Run it at the parallelism of the
 * stream it follows (one subtask for the poller): each subtask must see the marker.
 */
public final class ReferenceWatermarks<T extends Tuple> extends AbstractStreamOperator<T>
        implements OneInputStreamOperator<T, T> {

    private static final long serialVersionUID = 1L;

    private final int kindField;
    private final String loadedKind;
    private transient boolean loaded;

    /**
     * @param kindField index of the update's kind in the tuple
     * @param loadedKind the kind of the record that ends a complete load
     */
    public ReferenceWatermarks(int kindField, String loadedKind) {
        if (kindField < 0 || loadedKind == null) {
            throw new IllegalArgumentException("ReferenceWatermarks needs a field index >= 0 and a marker kind");
        }
        this.kindField = kindField;
        this.loadedKind = loadedKind;
    }

    @Override
    public void processElement(StreamRecord<T> element) {
        output.collect(element);
        if (!loaded && loadedKind.equals(element.getValue().getField(kindField))) {
            loaded = true;
            output.emitWatermarkStatus(WatermarkStatus.IDLE);
        }
    }

    @Override
    public void processWatermark(Watermark mark) {
        // the reference data's own time never becomes the cycle operator's event time
    }

    @Override
    public void processWatermarkStatus(WatermarkStatus watermarkStatus) {
        // idle once loaded, whatever upstream says
    }
}
