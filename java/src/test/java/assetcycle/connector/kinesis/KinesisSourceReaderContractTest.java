package assetcycle.connector.kinesis;

import static assetcycle.connector.kinesis.FakeKinesis.shardId;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.ReaderOutput;
import org.apache.flink.api.connector.source.SourceOutput;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.connector.testutils.source.reader.SourceReaderTestBase;
import org.apache.flink.connector.testutils.source.reader.TestingReaderContext;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.types.Row;

/**
 * Flink's own contract tests of a source reader (read every split, add splits to a running fetcher,
 * an empty queue, availability, snapshots) run on {@link KinesisSourceReader}: split {@code i} is a
 * shard whose records carry the numbers {@code i * n .. i * n + n - 1}; a bounded split is a closed
 * shard.
 */
class KinesisSourceReaderContractTest extends SourceReaderTestBase<KinesisShardSplit> {

    private final FakeKinesis kinesis = new FakeKinesis();

    @Override
    protected SourceReader<Integer, KinesisShardSplit> createReader() {
        KinesisSourceOptions options = KinesisSourceOptions.of(FakeKinesis.STREAM_ARN, Map.of(
                KinesisSourceOptions.INIT_POSITION, "TRIM_HORIZON",
                KinesisSourceOptions.MAX_RECORDS, "3",
                KinesisSourceOptions.EMPTY_FETCH_INTERVAL, "1 ms"));
        KinesisSourceReader reader = new KinesisSourceReader(new TestingReaderContext(), options, o -> kinesis);
        reader.start();
        return new NumberReader(reader);
    }

    @Override
    protected List<KinesisShardSplit> getSplits(int numSplits, int numRecordsPerSplit, Boundedness boundedness) {
        List<KinesisShardSplit> splits = new ArrayList<>();
        for (int i = 0; i < numSplits; i++) {
            splits.add(getSplit(i, numRecordsPerSplit, boundedness));
        }
        return splits;
    }

    @Override
    protected KinesisShardSplit getSplit(int splitId, int numRecords, Boundedness boundedness) {
        String shard = shardId(splitId);
        kinesis.openShard(shard);
        for (int i = 0; i < numRecords; i++) {
            kinesis.put(shard, String.valueOf(splitId * numRecords + i), 1_000L * i + splitId);
        }
        if (boundedness == Boundedness.BOUNDED) {
            kinesis.close(shard);
        }
        return new KinesisShardSplit(shard, StartingPosition.trimHorizon(), Set.of(), false);
    }

    @Override
    protected long getNextRecordIndex(KinesisShardSplit split) {
        String sequenceNumber = split.startingPosition().sequenceNumber();
        return sequenceNumber == null ? 0 : kinesis.recordsUpTo(split.shardId(), sequenceNumber);
    }

    /** The reader with each record's data as a number (the form the contract tests count). */
    private static final class NumberReader implements SourceReader<Integer, KinesisShardSplit> {
        private final KinesisSourceReader reader;

        NumberReader(KinesisSourceReader reader) {
            this.reader = reader;
        }

        @Override
        public void start() {}

        @Override
        public InputStatus pollNext(ReaderOutput<Integer> output) throws Exception {
            return reader.pollNext(new NumberOutput(output));
        }

        @Override
        public List<KinesisShardSplit> snapshotState(long checkpointId) {
            return reader.snapshotState(checkpointId);
        }

        @Override
        public CompletableFuture<Void> isAvailable() {
            return reader.isAvailable();
        }

        @Override
        public void addSplits(List<KinesisShardSplit> splits) {
            reader.addSplits(splits);
        }

        @Override
        public void notifyNoMoreSplits() {
            reader.notifyNoMoreSplits();
        }

        @Override
        public void close() throws Exception {
            reader.close();
        }
    }

    private static final class NumberOutput implements ReaderOutput<Row> {
        private final ReaderOutput<Integer> output;

        NumberOutput(ReaderOutput<Integer> output) {
            this.output = output;
        }

        private static int number(Row row) {
            return Integer.parseInt((String) row.getField(1));
        }

        @Override
        public void collect(Row record) {
            output.collect(number(record));
        }

        @Override
        public void collect(Row record, long timestamp) {
            output.collect(number(record), timestamp);
        }

        @Override
        public void emitWatermark(Watermark watermark) {
            output.emitWatermark(watermark);
        }

        @Override
        public void markIdle() {
            output.markIdle();
        }

        @Override
        public void markActive() {
            output.markActive();
        }

        @Override
        public SourceOutput<Row> createOutputForSplit(String splitId) {
            output.createOutputForSplit(splitId);
            return this;
        }

        @Override
        public void releaseOutputForSplit(String splitId) {
            output.releaseOutputForSplit(splitId);
        }
    }
}
