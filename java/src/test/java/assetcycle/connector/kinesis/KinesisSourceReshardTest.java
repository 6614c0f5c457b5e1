package assetcycle.connector.kinesis;

import static assetcycle.connector.kinesis.FakeKinesis.shardId;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import assetcycle.connector.RecordingOutput;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.BooleanSupplier;

import org.apache.flink.api.connector.source.ReaderInfo;
import org.apache.flink.api.connector.source.SourceEvent;
import org.apache.flink.api.connector.source.SplitsAssignment;
import org.apache.flink.api.connector.source.mocks.MockSplitEnumeratorContext;
import org.apache.flink.connector.testutils.source.reader.TestingReaderContext;
import org.apache.flink.core.io.InputStatus;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The whole source on one in-memory stream: the enumerator and two readers, wired as Flink wires
 * them (assignments to readers, source events both ways), through a split, a merge and a restore
 * from a checkpoint taken while a shard finished, after which checkpoints complete as the readers
 * go on (a child shard is read only once one records its parents). Every record is read exactly once
 * counting from the checkpoint, and a key's records stay in order across parent and child shards.
 */
class KinesisSourceReshardTest {

    private static final int MAX_ROUNDS = 5_000;

    private final FakeKinesis kinesis = new FakeKinesis();
    private final List<AutoCloseable> toClose = new ArrayList<>();

    @AfterEach
    void closeAll() throws Exception {
        for (int i = toClose.size() - 1; i >= 0; i--) {
            toClose.get(i).close();
        }
    }

    /** One run of the source: the enumerator, its readers, and what the readers emitted in order. */
    private final class Run {
        final MockSplitEnumeratorContext<KinesisShardSplit> enumContext;
        final KinesisShardEnumerator enumerator;
        final List<KinesisSourceReader> readers = new ArrayList<>();
        final List<TestingReaderContext> readerContexts = new ArrayList<>();
        final RecordingOutput output = new RecordingOutput();
        private int assignmentsDelivered;
        /** The id of the next checkpoint taken every round of {@link #runUntil}; 0: none taken. */
        private long nextCheckpointId;
        private final Map<Integer, Integer> eventsDelivered = new HashMap<>();

        Run(KinesisEnumeratorState state, List<List<KinesisShardSplit>> restoredReaders) throws Exception {
            KinesisSourceOptions options = KinesisSourceOptions.of(FakeKinesis.STREAM_ARN, Map.of(
                    KinesisSourceOptions.INIT_POSITION, "TRIM_HORIZON",
                    KinesisSourceOptions.MAX_RECORDS, "2",
                    KinesisSourceOptions.EMPTY_FETCH_INTERVAL, "1 ms"));
            enumContext = new MockSplitEnumeratorContext<>(restoredReaders.size());
            toClose.add(enumContext);
            enumerator = new KinesisShardEnumerator(enumContext, options, state, o -> kinesis);
            toClose.add(enumerator);
            for (int r = 0; r < restoredReaders.size(); r++) {
                TestingReaderContext context = new TestingReaderContext();
                KinesisSourceReader reader = new KinesisSourceReader(context, options, o -> kinesis);
                toClose.add(reader);
                readerContexts.add(context);
                readers.add(reader);
                reader.start();
                if (!restoredReaders.get(r).isEmpty()) {
                    reader.addSplits(restoredReaders.get(r));
                }
                enumContext.registerReader(new ReaderInfo(r, "localhost"));
                enumerator.addReader(r);
            }
            enumerator.start();
        }

        void discover() throws Throwable {
            enumContext.runPeriodicCallable(0);
        }

        /** Delivers assignments and source events, as the coordinator and the tasks would. */
        void route(boolean readerEventsToo) throws Exception {
            List<SplitsAssignment<KinesisShardSplit>> assignments = enumContext.getSplitsAssignmentSequence();
            while (assignmentsDelivered < assignments.size()) {
                assignments.get(assignmentsDelivered++).assignment()
                        .forEach((reader, splits) -> readers.get(reader).addSplits(splits));
            }
            for (Map.Entry<Integer, List<SourceEvent>> entry : enumContext.getSentSourceEvent().entrySet()) {
                List<SourceEvent> events = entry.getValue();
                int from = eventsDelivered.getOrDefault(entry.getKey(), 0);
                for (SourceEvent event : events.subList(from, events.size())) {
                    readers.get(entry.getKey()).handleSourceEvents(event);
                }
                eventsDelivered.put(entry.getKey(), events.size());
            }
            if (readerEventsToo) {
                for (int r = 0; r < readers.size(); r++) {
                    for (SourceEvent event : readerContexts.get(r).getSentEvents()) {
                        enumerator.handleSourceEvent(r, event);
                    }
                    readerContexts.get(r).clearSentEvents();
                }
            }
        }

        /** From now on {@link #runUntil} completes a checkpoint every round, from id {@code firstId} on. */
        void checkpointEveryRound(long firstId) {
            nextCheckpointId = firstId;
        }

        /** A checkpoint as Flink takes it: the enumerator's part, the readers' parts, then its completion. */
        private void completeCheckpoint(long checkpointId) throws Exception {
            enumerator.snapshotState(checkpointId);
            snapshotReaders(checkpointId);
            enumerator.notifyCheckpointComplete(checkpointId);
            for (KinesisSourceReader reader : readers) {
                reader.notifyCheckpointComplete(checkpointId);
            }
        }

        /** Routes, checkpoints (when asked to) and polls every reader until {@code done}. */
        void runUntil(BooleanSupplier done) throws Exception {
            runUntil(done, true);
        }

        void runUntil(BooleanSupplier done, boolean readerEventsToo) throws Exception {
            for (int round = 0; round < MAX_ROUNDS && !done.getAsBoolean(); round++) {
                route(readerEventsToo);
                if (nextCheckpointId > 0) {
                    completeCheckpoint(nextCheckpointId++);
                }
                boolean any = false;
                for (KinesisSourceReader reader : readers) {
                    any |= reader.pollNext(output) == InputStatus.MORE_AVAILABLE;
                }
                if (!any && !done.getAsBoolean()) {
                    CompletableFuture<?>[] available = readers.stream().map(KinesisSourceReader::isAvailable)
                            .toArray(CompletableFuture[]::new);
                    try {
                        CompletableFuture.anyOf(available).get(50, TimeUnit.MILLISECONDS);
                    } catch (TimeoutException e) {
                        // nothing yet: route and look again
                    }
                }
            }
            if (!done.getAsBoolean()) {
                fail("not done after " + MAX_ROUNDS + " rounds; read " + output.data);
            }
        }

        List<List<KinesisShardSplit>> snapshotReaders(long checkpointId) {
            List<List<KinesisShardSplit>> states = new ArrayList<>();
            for (KinesisSourceReader reader : readers) {
                states.add(reader.snapshotState(checkpointId));
            }
            return states;
        }
    }

    private static List<String> sorted(List<String> values) {
        List<String> out = new ArrayList<>(values);
        java.util.Collections.sort(out);
        return out;
    }

    private static void assertBefore(List<String> read, String first, String second) {
        assertTrue(read.indexOf(first) >= 0 && read.indexOf(first) < read.indexOf(second),
                first + " must come before " + second + " in " + read);
    }

    @Test
    void nothingIsLostOrReadTwiceThroughASplitARestoreAndAMerge() throws Throwable {
        kinesis.openShard(shardId(0)).openShard(shardId(1));
        kinesis.put(shardId(0), "a1", 10);
        kinesis.put(shardId(0), "a2", 20);
        kinesis.put(shardId(1), "b1", 15);
        kinesis.put(shardId(1), "b2", 25);

        Run first = new Run(KinesisEnumeratorState.initial(), List.of(List.of(), List.of()));
        first.discover();
        first.runUntil(() -> first.output.data.size() == 4);

        // shard 0 splits; its children wait for it to be read to its end
        kinesis.put(shardId(0), "a3", 30);
        kinesis.split(shardId(0), shardId(2), shardId(3));
        kinesis.put(shardId(2), "a4", 40);
        kinesis.put(shardId(3), "c1", 45);
        first.discover();

        // checkpoint 1: the enumerator's part first; then reader 0 reads shard 0 to its end, and its
        // report is still on the way when the readers' parts are taken
        byte[] enumeratorCheckpoint = new KinesisSerializers.StateSerializer().serialize(first.enumerator.snapshotState(1L));
        first.runUntil(() -> !first.readerContexts.get(0).getSentEvents().isEmpty(), false);
        List<List<KinesisShardSplit>> readerCheckpoint = first.snapshotReaders(1L);
        List<String> beforeCheckpoint = new ArrayList<>(first.output.data);
        assertEquals(List.of("a1", "a2", "a3", "b1", "b2"), sorted(beforeCheckpoint));
        assertBefore(beforeCheckpoint, "a2", "a3");
        closeAll();
        toClose.clear();

        // restore from checkpoint 1 (the job failed before the report arrived)
        KinesisSerializers.StateSerializer serializer = new KinesisSerializers.StateSerializer();
        Run second = new Run(serializer.deserialize(serializer.getVersion(), enumeratorCheckpoint), readerCheckpoint);
        second.checkpointEveryRound(2L); // a child is read once a completed checkpoint records its parents
        second.discover();
        second.runUntil(() -> second.output.data.size() == 2);
        assertEquals(List.of("a4", "c1"), sorted(second.output.data),
                "shard 0's children are read after the restore");

        // shards 1 and 2 merge into shard 4
        kinesis.put(shardId(1), "b3", 50);
        kinesis.merge(shardId(1), shardId(2), shardId(4));
        kinesis.put(shardId(4), "b4", 60);
        kinesis.put(shardId(4), "a5", 70);
        second.discover();
        second.runUntil(() -> second.output.data.size() == 5);

        List<String> all = new ArrayList<>(beforeCheckpoint);
        all.addAll(second.output.data);
        assertEquals(List.of("a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3", "b4", "c1"),
                sorted(all), "each record exactly once");
        assertBefore(second.output.data, "a4", "a5");
        assertBefore(second.output.data, "b3", "b4");
    }
}
