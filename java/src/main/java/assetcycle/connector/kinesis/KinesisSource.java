package assetcycle.connector.kinesis;

import assetcycle.connector.SourceRecords;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.types.Row;

/**
 * asset-cycle's Kinesis Data Streams source (FLIP-27, polling with GetRecords): records as
 * {@code Row(position, data)} ({@link SourceRecords}), exactly once with Flink checkpoints (each
 * shard's sequence number is part of the reader's state), shards discovered as the stream is
 * resharded, a child shard read only after its parents. Options: {@link KinesisSourceOptions}.
 *
 * <p>From Python: {@code jvm.assetcycle.connector.kinesis.KinesisSource(stream_arn, configuration)}
 * wrapped in {@code pyflink.datastream.connectors.Source}.
 */
public final class KinesisSource
        implements Source<Row, KinesisShardSplit, KinesisEnumeratorState>, ResultTypeQueryable<Row> {

    private static final long serialVersionUID = 1L;

    private final KinesisSourceOptions options;

    /** A source of {@code streamArn}; throws IllegalArgumentException naming a bad option. */
    public KinesisSource(String streamArn, Configuration configuration) {
        this.options = KinesisSourceOptions.of(streamArn, configuration.toMap());
    }

    @Override
    public Boundedness getBoundedness() {
        return Boundedness.CONTINUOUS_UNBOUNDED;
    }

    @Override
    public SourceReader<Row, KinesisShardSplit> createReader(SourceReaderContext readerContext) {
        return new KinesisSourceReader(readerContext, options, KinesisClients::create);
    }

    @Override
    public SplitEnumerator<KinesisShardSplit, KinesisEnumeratorState> createEnumerator(
            SplitEnumeratorContext<KinesisShardSplit> enumContext) {
        return new KinesisShardEnumerator(enumContext, options, KinesisEnumeratorState.initial(), KinesisClients::create);
    }

    @Override
    public SplitEnumerator<KinesisShardSplit, KinesisEnumeratorState> restoreEnumerator(
            SplitEnumeratorContext<KinesisShardSplit> enumContext, KinesisEnumeratorState checkpoint) {
        return new KinesisShardEnumerator(enumContext, options, checkpoint, KinesisClients::create);
    }

    @Override
    public SimpleVersionedSerializer<KinesisShardSplit> getSplitSerializer() {
        return new KinesisSerializers.SplitSerializer();
    }

    @Override
    public SimpleVersionedSerializer<KinesisEnumeratorState> getEnumeratorCheckpointSerializer() {
        return new KinesisSerializers.StateSerializer();
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return SourceRecords.TYPE;
    }

    /** The validated options (for logging and tests). */
    public String describe() {
        return options.toString();
    }
}
