package assetcycle.connector.kinesis;

import org.apache.flink.api.connector.source.SourceOutput;
import org.apache.flink.connector.base.source.reader.RecordEmitter;
import org.apache.flink.types.Row;

import java.nio.charset.StandardCharsets;

/**
 * Emits a fetched record as {@code Row(kinesis:<stream>:<shard>:<sequence number>, data as UTF-8)}
 * with its arrival time as timestamp, and moves the split's position past it.
 */
final class KinesisRecordEmitter implements RecordEmitter<KinesisRecord, Row, KinesisShardSplitState> {

    private final String positionPrefix;

    KinesisRecordEmitter(String streamName) {
        this.positionPrefix = "kinesis:" + streamName + ":";
    }

    @Override
    public void emitRecord(KinesisRecord record, SourceOutput<Row> output, KinesisShardSplitState state) {
        String position = positionPrefix + record.shardId + ":" + record.sequenceNumber;
        output.collect(Row.of(position, new String(record.data, StandardCharsets.UTF_8)), record.arrivalMs);
        state.emitted(record.sequenceNumber);
    }
}
