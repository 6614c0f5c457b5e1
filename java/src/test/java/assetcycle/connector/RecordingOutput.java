package assetcycle.connector;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.connector.source.ReaderOutput;
import org.apache.flink.api.connector.source.SourceOutput;
import org.apache.flink.types.Row;

/** Collects what a source reader emits: each row's data, its position field and its timestamp. */
public final class RecordingOutput implements ReaderOutput<Row> {

    public final List<String> data = new ArrayList<>();
    public final List<String> positions = new ArrayList<>();
    public final List<Long> timestamps = new ArrayList<>();

    @Override
    public void collect(Row record) {
        collect(record, Long.MIN_VALUE);
    }

    @Override
    public void collect(Row record, long timestamp) {
        positions.add((String) record.getField(0));
        data.add((String) record.getField(1));
        timestamps.add(timestamp);
    }

    @Override
    public void emitWatermark(Watermark watermark) {}

    @Override
    public void markIdle() {}

    @Override
    public void markActive() {}

    @Override
    public SourceOutput<Row> createOutputForSplit(String splitId) {
        return this;
    }

    @Override
    public void releaseOutputForSplit(String splitId) {}
}
