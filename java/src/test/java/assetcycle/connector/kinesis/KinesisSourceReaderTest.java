package assetcycle.connector.kinesis;

import static assetcycle.connector.kinesis.FakeKinesis.shardId;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import assetcycle.connector.RecordingOutput;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.BooleanSupplier;

import org.apache.flink.api.connector.source.SourceEvent;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.testutils.source.reader.TestingReaderContext;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.testutils.MetricListener;
import org.apache.flink.runtime.metrics.groups.InternalSourceReaderMetricGroup;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The source reader: what it emits, what it checkpoints, and its finished-shard markers. */
class KinesisSourceReaderTest {

    private static final int MAX_POLLS = 10_000;

    private final FakeKinesis kinesis = new FakeKinesis();
    private final MetricListener metrics = new MetricListener();
    private final TestingReaderContext context = new TestingReaderContext(
            new Configuration(), InternalSourceReaderMetricGroup.mock(metrics.getMetricGroup()));
    private final RecordingOutput output = new RecordingOutput();
    private final List<KinesisSourceReader> readers = new ArrayList<>();

    @AfterEach
    void closeReaders() throws Exception {
        for (KinesisSourceReader reader : readers) {
            reader.close();
        }
    }

    private KinesisSourceReader reader(TestingReaderContext readerContext) {
        KinesisSourceOptions options = KinesisSourceOptions.of(FakeKinesis.STREAM_ARN, Map.of(
                KinesisSourceOptions.INIT_POSITION, "TRIM_HORIZON",
                KinesisSourceOptions.EMPTY_FETCH_INTERVAL, "1 ms"));
        KinesisSourceReader reader = new KinesisSourceReader(readerContext, options, o -> kinesis);
        reader.start();
        readers.add(reader);
        return reader;
    }

    /** Polls (one record per call, as the task does) until {@code done}, waiting for data in between. */
    static void pollUntil(KinesisSourceReader reader, RecordingOutput out, BooleanSupplier done) throws Exception {
        for (int i = 0; i < MAX_POLLS && !done.getAsBoolean(); i++) {
            if (reader.pollNext(out) == InputStatus.NOTHING_AVAILABLE) {
                try {
                    reader.isAvailable().get(100, TimeUnit.MILLISECONDS);
                } catch (TimeoutException e) {
                    // nothing yet: look again
                }
            }
        }
        if (!done.getAsBoolean()) {
            fail("not done after " + MAX_POLLS + " polls; read " + out.data);
        }
    }

    private static KinesisShardSplit split(int shard) {
        return new KinesisShardSplit(shardId(shard), StartingPosition.trimHorizon(), Set.of(), false);
    }

    private static List<String> finishedEvents(List<SourceEvent> events) {
        List<String> out = new ArrayList<>();
        for (SourceEvent event : events) {
            out.addAll(((ShardsFinishedEvent) event).shardIds);
        }
        return out;
    }

    @Test
    void emitsPositionAndDataWithTheArrivalTimeAsTimestamp() throws Exception {
        kinesis.openShard(shardId(0));
        String seq = kinesis.put(shardId(0), "{\"truck\":\"T1\"}", 1_714_536_000_123L);
        KinesisSourceReader reader = reader(context);
        reader.addSplits(List.of(split(0)));
        pollUntil(reader, output, () -> output.data.size() == 1);
        assertEquals(List.of("{\"truck\":\"T1\"}"), output.data);
        assertEquals(List.of("kinesis:trucks:" + shardId(0) + ":" + seq), output.positions);
        assertEquals(List.of(1_714_536_000_123L), output.timestamps);
    }

    @Test
    void aCheckpointHoldsThePositionAfterTheLastEmittedRecordAndARestoreGoesOnFromIt() throws Exception {
        kinesis.openShard(shardId(0));
        String first = kinesis.put(shardId(0), "r1", 1);
        kinesis.put(shardId(0), "r2", 2);
        kinesis.put(shardId(0), "r3", 3);
        KinesisSourceReader reader = reader(context);
        reader.addSplits(List.of(split(0)));
        pollUntil(reader, output, () -> output.data.size() == 1);
        List<KinesisShardSplit> checkpoint = reader.snapshotState(1L);
        assertEquals(List.of(new KinesisShardSplit(shardId(0), StartingPosition.afterSequenceNumber(first), Set.of(),
                false)), checkpoint, "r2 may be fetched already, but only r1 was emitted");

        KinesisSourceReader restored = reader(new TestingReaderContext());
        RecordingOutput afterRestore = new RecordingOutput();
        restored.addSplits(checkpoint);
        pollUntil(restored, afterRestore, () -> afterRestore.data.size() == 2);
        assertEquals(List.of("r2", "r3"), afterRestore.data);
    }

    @Test
    void aFinishedShardIsReportedAndKeptInCheckpointsUntilTheEnumeratorRecordsIt() throws Exception {
        kinesis.openShard(shardId(0)).openShard(shardId(1));
        kinesis.put(shardId(0), "a", 1);
        String last = kinesis.put(shardId(0), "b", 2);
        kinesis.close(shardId(0));
        KinesisSourceReader reader = reader(context);
        reader.addSplits(List.of(split(0), split(1)));
        pollUntil(reader, output, () -> !context.getSentEvents().isEmpty());
        assertEquals(List.of("a", "b"), output.data);
        assertEquals(List.of(shardId(0)), finishedEvents(context.getSentEvents()));

        KinesisShardSplit marker = new KinesisShardSplit(shardId(0), StartingPosition.afterSequenceNumber(last),
                Set.of(), true);
        assertEquals(List.of(split(1), marker), reader.snapshotState(1L));
        reader.handleSourceEvents(new FinishedShardsRecordedEvent(Set.of(shardId(1))));
        assertEquals(List.of(split(1), marker), reader.snapshotState(2L), "another shard's record changes nothing");
        reader.handleSourceEvents(new FinishedShardsRecordedEvent(Set.of(shardId(0))));
        assertEquals(List.of(split(1)), reader.snapshotState(3L));
    }

    @Test
    void aRestoredMarkerIsReportedAgainAndNotRead() throws Exception {
        kinesis.openShard(shardId(0));
        kinesis.put(shardId(0), "already read", 1);
        KinesisShardSplit marker = split(0).asFinished();
        KinesisSourceReader reader = reader(context);
        reader.addSplits(List.of(marker));
        assertEquals(List.of(shardId(0)), finishedEvents(context.getSentEvents()));
        assertEquals(List.of(marker), reader.snapshotState(1L));
        assertEquals(InputStatus.NOTHING_AVAILABLE, reader.pollNext(output));
        assertTrue(kinesis.iteratorRequests().isEmpty(), "a finished shard is not read again");
        reader.handleSourceEvents(new FinishedShardsRecordedEvent(Set.of(shardId(0))));
        assertEquals(List.of(), reader.snapshotState(2L));
    }

    @Test
    void theLagGaugeIsTheLargestOfTheReadersShards() throws Exception {
        kinesis.openShard(shardId(0)).openShard(shardId(1));
        kinesis.put(shardId(0), "a", 1);
        kinesis.put(shardId(1), "b", 2);
        kinesis.reportBehind(shardId(0), 4_000L);
        kinesis.reportBehind(shardId(1), 9_000L);
        KinesisSourceReader reader = reader(context);
        reader.addSplits(List.of(split(0), split(1)));
        // "a" is released once shard 1 has a record buffered too: both shards were polled by then
        pollUntil(reader, output, () -> output.data.size() == 1);
        Gauge<Long> gauge = metrics.<Long>getGauge("millisBehindLatest").orElseThrow();
        assertEquals(9_000L, gauge.getValue());
    }
}
