package assetcycle.connector.kinesis;

import static assetcycle.connector.kinesis.FakeKinesis.shardId;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

import org.apache.flink.api.connector.source.ReaderInfo;
import org.apache.flink.api.connector.source.SourceEvent;
import org.apache.flink.api.connector.source.SplitsAssignment;
import org.apache.flink.api.connector.source.mocks.MockSplitEnumeratorContext;
import org.apache.flink.util.FlinkRuntimeException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import software.amazon.awssdk.services.kinesis.model.LimitExceededException;
import software.amazon.awssdk.services.kinesis.model.ListShardsRequest;
import software.amazon.awssdk.services.kinesis.model.ResourceNotFoundException;
import software.amazon.awssdk.services.kinesis.model.ShardFilterType;

/**
 * The enumerator on Flink's mock enumerator context (discovery in a worker thread, its result in the
 * coordinator thread) against an in-memory stream: which reader gets which shard, and when.
 */
class KinesisShardEnumeratorTest {

    private static final long START_MS = 1_714_536_000_000L;

    private final FakeKinesis kinesis = new FakeKinesis();
    private final List<MockSplitEnumeratorContext<KinesisShardSplit>> contexts = new ArrayList<>();
    private final List<KinesisShardEnumerator> enumerators = new ArrayList<>();
    private MockSplitEnumeratorContext<KinesisShardSplit> context;
    private KinesisShardEnumerator enumerator;

    @AfterEach
    void closeAll() throws Exception {
        for (KinesisShardEnumerator e : enumerators) {
            e.close();
        }
        for (MockSplitEnumeratorContext<KinesisShardSplit> c : contexts) {
            c.close();
        }
    }

    private static KinesisSourceOptions options(String initialPosition) {
        Map<String, String> conf = new TreeMap<>();
        conf.put(KinesisSourceOptions.INIT_POSITION, initialPosition);
        if (initialPosition.equals("AT_TIMESTAMP")) {
            conf.put(KinesisSourceOptions.INIT_TIMESTAMP, String.valueOf(START_MS / 1000));
        }
        return KinesisSourceOptions.of(FakeKinesis.STREAM_ARN, conf);
    }

    /** A started enumerator (from {@code state}) with {@code readers} registered readers. */
    private void start(String initialPosition, KinesisEnumeratorState state, int readers) {
        start(options(initialPosition), state, readers);
    }

    private void start(KinesisSourceOptions options, KinesisEnumeratorState state, int readers) {
        context = new MockSplitEnumeratorContext<>(Math.max(readers, 1));
        contexts.add(context);
        for (int r = 0; r < readers; r++) {
            context.registerReader(new ReaderInfo(r, "localhost"));
        }
        enumerator = new KinesisShardEnumerator(context, options, state, opts -> kinesis);
        enumerators.add(enumerator);
        enumerator.start();
    }

    private void start(int readers) {
        start("TRIM_HORIZON", KinesisEnumeratorState.initial(), readers);
    }

    /** One discovery round (ListShards, then assignment in the coordinator thread). */
    private void discover() throws Throwable {
        context.runPeriodicCallable(0);
    }

    /** Shard ids assigned so far, by reader, in assignment order. */
    private Map<Integer, List<String>> assigned() {
        Map<Integer, List<String>> out = new TreeMap<>();
        for (SplitsAssignment<KinesisShardSplit> assignment : context.getSplitsAssignmentSequence()) {
            assignment.assignment().forEach((reader, splits) -> splits.forEach(
                    s -> out.computeIfAbsent(reader, r -> new ArrayList<>()).add(s.shardId())));
        }
        return out;
    }

    private List<KinesisShardSplit> assignedSplits() {
        List<KinesisShardSplit> out = new ArrayList<>();
        context.getSplitsAssignmentSequence().forEach(a -> a.assignment().values().forEach(out::addAll));
        return out;
    }

    private void finished(int reader, int... shards) {
        Set<String> ids = new java.util.TreeSet<>();
        for (int shard : shards) {
            ids.add(shardId(shard));
        }
        enumerator.handleSourceEvent(reader, new ShardsFinishedEvent(ids));
    }

    /** Checkpoint {@code id}: the enumerator's snapshot, then the notice that the checkpoint completed. */
    private void checkpoint(long id) {
        enumerator.snapshotState(id);
        enumerator.notifyCheckpointComplete(id);
    }

    private static Map<Integer, List<String>> byReader(Object... readerThenShards) {
        Map<Integer, List<String>> out = new TreeMap<>();
        for (int i = 0; i < readerThenShards.length; i += 2) {
            List<String> ids = new ArrayList<>();
            for (int shard : (int[]) readerThenShards[i + 1]) {
                ids.add(shardId(shard));
            }
            out.put((Integer) readerThenShards[i], ids);
        }
        return out;
    }

    private static int[] shards(int... ids) {
        return ids;
    }

    private void openShards(int count) {
        for (int i = 0; i < count; i++) {
            kinesis.openShard(shardId(i));
        }
    }

    @Test
    void shardsGoToTheReaderWithFewestEachExactlyOnce() throws Throwable {
        openShards(5);
        start(2);
        discover();
        discover();
        assertEquals(byReader(0, shards(0, 2, 4), 1, shards(1, 3)), assigned());
        for (KinesisShardSplit split : assignedSplits()) {
            assertEquals(StartingPosition.trimHorizon(), split.startingPosition());
        }
    }

    @Test
    void moreReadersThanShardsLeaveTheRestIdle() throws Throwable {
        openShards(2);
        start(4);
        discover();
        assertEquals(byReader(0, shards(0), 1, shards(1)), assigned());
    }

    @Test
    void shardsWaitForAReaderToRegister() throws Throwable {
        openShards(2);
        start(0);
        discover();
        assertEquals(Map.of(), assigned());
        context.registerReader(new ReaderInfo(0, "localhost"));
        enumerator.addReader(0);
        assertEquals(byReader(0, shards(0, 1)), assigned());
    }

    @Test
    void theFirstDiscoveryListsFromTheStartPositionAndLaterOnesOnlyNewerShards() throws Throwable {
        openShards(3);
        kinesis.listShardsPageSize(2);
        start("AT_TIMESTAMP", KinesisEnumeratorState.initial(), 1);
        discover();
        List<ListShardsRequest> first = kinesis.listShardsRequests();
        assertEquals(2, first.size(), "three shards in pages of two");
        assertEquals(ShardFilterType.FROM_TIMESTAMP, first.get(0).shardFilter().type());
        assertEquals(START_MS, first.get(0).shardFilter().timestamp().toEpochMilli());
        assertEquals(null, first.get(1).streamARN(), "a next page is asked for by its token alone");
        assertEquals(3, assignedSplits().size());
        for (KinesisShardSplit split : assignedSplits()) {
            assertEquals(StartingPosition.atTimestamp(START_MS), split.startingPosition());
        }

        kinesis.openShard(shardId(3));
        discover();
        ListShardsRequest later = kinesis.listShardsRequests().get(2);
        assertEquals(ShardFilterType.AFTER_SHARD_ID, later.shardFilter().type());
        assertEquals(shardId(2), later.shardFilter().shardId());
        KinesisShardSplit newShard = assignedSplits().get(3);
        assertEquals(shardId(3), newShard.shardId());
        assertEquals(StartingPosition.trimHorizon(), newShard.startingPosition(),
                "a shard created after the start is read from its beginning");
    }

    /**
     * LATEST is the moment the source was created: a job that fails before its first checkpoint gets
     * a fresh enumerator from the same source (Flink restores none), which must not skip what arrived
     * meanwhile.
     */
    @Test
    void latestIsWhenTheSourceWasCreatedAlsoForAnEnumeratorAfterAFailover() throws Throwable {
        openShards(1);
        long before = System.currentTimeMillis();
        KinesisSourceOptions latest = KinesisSourceOptions.of(FakeKinesis.STREAM_ARN, Map.of());
        long after = System.currentTimeMillis();
        while (System.currentTimeMillis() <= after) {
            Thread.onSpinWait(); // the job starts a moment after it was built
        }
        List<Long> starts = new ArrayList<>();
        for (int attempt = 0; attempt < 2; attempt++) {
            start(latest, KinesisEnumeratorState.initial(), 1);
            discover();
            List<ListShardsRequest> requests = kinesis.listShardsRequests();
            ListShardsRequest first = requests.get(requests.size() - 1);
            assertEquals(ShardFilterType.FROM_TIMESTAMP, first.shardFilter().type());
            starts.add(first.shardFilter().timestamp().toEpochMilli());
            assertEquals(StartingPosition.atTimestamp(starts.get(attempt)), assignedSplits().get(0).startingPosition());
            while (System.currentTimeMillis() <= starts.get(attempt)) {
                Thread.onSpinWait(); // the failover takes a moment
            }
        }
        assertEquals(starts.get(0), starts.get(1), "the enumerator after the failover starts where the first did");
        assertTrue(before <= starts.get(0) && starts.get(0) <= after, starts + " not within [" + before + ", " + after
                + "]");
    }

    @Test
    void childrenOfASplitWaitUntilTheirParentIsReadToItsEnd() throws Throwable {
        openShards(2);
        start(2);
        discover();
        kinesis.split(shardId(0), shardId(2), shardId(3));
        discover();
        assertEquals(byReader(0, shards(0), 1, shards(1)), assigned(), "the children wait for shard 0");

        finished(1, 1);
        checkpoint(1L);
        assertEquals(byReader(0, shards(0), 1, shards(1)), assigned(), "shard 1 is not their parent");
        finished(0, 0);
        checkpoint(2L);
        assertEquals(byReader(0, shards(0, 2), 1, shards(1, 3)), assigned());
        for (KinesisShardSplit split : assignedSplits().subList(2, 4)) {
            assertEquals(Set.of(shardId(0)), split.parentShardIds());
        }
    }

    @Test
    void aMergedShardWaitsForBothParents() throws Throwable {
        openShards(2);
        start(2);
        discover();
        kinesis.merge(shardId(0), shardId(1), shardId(2));
        discover();
        finished(0, 0);
        checkpoint(1L);
        assertEquals(byReader(0, shards(0), 1, shards(1)), assigned(), "shard 1 is not finished yet");
        finished(1, 1);
        checkpoint(2L);
        assertEquals(byReader(0, shards(0, 2), 1, shards(1)), assigned());
    }

    @Test
    void aParentOlderThanTheStartPositionCountsAsFinished() throws Throwable {
        openShards(1);
        kinesis.split(shardId(0), shardId(1), shardId(2));
        start("AT_TIMESTAMP", KinesisEnumeratorState.initial(), 1);
        discover();
        assertEquals(byReader(0, shards(1, 2)), assigned(), "shard 0 closed before the start: never listed");
    }

    @Test
    void aThrottledDiscoveryIsRetriedAtTheNextOne() throws Throwable {
        openShards(2);
        kinesis.failNext("listShards", LimitExceededException.builder().message("slow down").build());
        start(1);
        discover();
        assertEquals(Map.of(), assigned());
        discover();
        assertEquals(byReader(0, shards(0, 1)), assigned());
        assertEquals(ShardFilterType.FROM_TRIM_HORIZON, kinesis.listShardsRequests().get(1).shardFilter().type());
    }

    @Test
    void otherDiscoveryErrorsFailTheEnumerator() {
        kinesis.failNext("listShards", ResourceNotFoundException.builder().message("stream deleted").build());
        start(1);
        FlinkRuntimeException error = assertThrows(FlinkRuntimeException.class, this::discover);
        assertTrue(error.getMessage().contains(FakeKinesis.STREAM_ARN), error.getMessage());
    }

    @Test
    void splitsOfAFailedReaderGoToTheOthersUnlessFinished() throws Throwable {
        openShards(4);
        start(2);
        discover();
        assertEquals(byReader(0, shards(0, 2), 1, shards(1, 3)), assigned());
        finished(1, 3);
        context.unregisterReader(1);
        List<KinesisShardSplit> back = new ArrayList<>();
        for (KinesisShardSplit split : assignedSplits()) {
            if (split.shardId().equals(shardId(1)) || split.shardId().equals(shardId(3))) {
                back.add(split);
            }
        }
        enumerator.addSplitsBack(back, 1);
        assertEquals(byReader(0, shards(0, 2), 1, shards(1, 3)), assigned(), "shard 1 waits for its reader");
        context.registerReader(new ReaderInfo(1, "localhost"));
        enumerator.addReader(1);
        assertEquals(byReader(0, shards(0, 2), 1, shards(1, 3, 1)), assigned(),
                "shard 1 goes to the restarted reader; shard 3 was read to its end and stays finished");
    }

    @Test
    void shardsWaitUntilEveryReaderHasRegistered() throws Throwable {
        openShards(4);
        context = new MockSplitEnumeratorContext<>(2);
        contexts.add(context);
        context.registerReader(new ReaderInfo(1, "localhost"));
        enumerator = new KinesisShardEnumerator(context, options("TRIM_HORIZON"), KinesisEnumeratorState.initial(),
                opts -> kinesis);
        enumerators.add(enumerator);
        enumerator.start();
        discover();
        assertEquals(Map.of(), assigned(), "one reader of two: it would get all four shards");
        context.registerReader(new ReaderInfo(0, "localhost"));
        enumerator.addReader(0);
        assertEquals(byReader(0, shards(0, 2), 1, shards(1, 3)), assigned());
    }

    @Test
    void aRestoredEnumeratorKeepsItsShardsAndTheirWaitingChildren() throws Throwable {
        openShards(2);
        start(2);
        discover();
        kinesis.split(shardId(0), shardId(2), shardId(3));
        discover();
        KinesisSerializers.StateSerializer serializer = new KinesisSerializers.StateSerializer();
        byte[] checkpoint = serializer.serialize(enumerator.snapshotState(1L));

        start("TRIM_HORIZON", serializer.deserialize(serializer.getVersion(), checkpoint), 2);
        discover();
        assertEquals(Map.of(), assigned(), "shards 0 and 1 are in the readers' own state; 2 and 3 wait");
        ListShardsRequest resumed = kinesis.listShardsRequests().get(kinesis.listShardsRequests().size() - 1);
        assertEquals(ShardFilterType.AFTER_SHARD_ID, resumed.shardFilter().type());
        assertEquals(shardId(3), resumed.shardFilter().shardId());

        // a reader restored with shard 0 read to its end reports it again (its finished marker); the
        // restored checkpoint does not record it, so the children wait for the next one
        finished(0, 0);
        assertEquals(Map.of(), assigned());
        checkpoint(2L);
        assertEquals(byReader(0, shards(2), 1, shards(3)), assigned());
    }

    /**
     * A parent's last records may still be on their way to the keyed operator when its reader reports
     * it finished; a child given to another reader then could overtake them. A checkpoint whose
     * enumerator snapshot was taken after the report has its barrier behind those records, so its
     * completion means every operator processed them.
     */
    @Test
    void childrenWaitForACompletedCheckpointTakenAfterTheirParentFinished() throws Throwable {
        openShards(2);
        start(2);
        discover();
        kinesis.split(shardId(0), shardId(2), shardId(3));
        discover();
        enumerator.snapshotState(1L);
        finished(0, 0);
        assertEquals(byReader(0, shards(0), 1, shards(1)), assigned(), "read to its end, not yet processed");
        enumerator.notifyCheckpointComplete(1L);
        assertEquals(byReader(0, shards(0), 1, shards(1)), assigned(),
                "checkpoint 1 was taken before shard 0 finished: its barrier may precede shard 0's last records");
        enumerator.snapshotState(2L);
        discover();
        assertEquals(byReader(0, shards(0), 1, shards(1)), assigned(), "checkpoint 2 has not completed");
        enumerator.notifyCheckpointComplete(2L);
        assertEquals(byReader(0, shards(0, 2, 3), 1, shards(1)), assigned(), "reader 0 read none once shard 0 ended");
    }

    @Test
    void aCheckpointThatNeverCompletesReleasesNothingUntilALaterOneDoes() throws Throwable {
        openShards(1);
        start(1);
        discover();
        kinesis.split(shardId(0), shardId(1), shardId(2));
        discover();
        finished(0, 0);
        enumerator.snapshotState(1L);
        enumerator.snapshotState(2L);
        assertEquals(byReader(0, shards(0)), assigned());
        enumerator.notifyCheckpointComplete(2L);
        assertEquals(byReader(0, shards(0, 1, 2)), assigned(), "checkpoint 1 was aborted; 2 records shard 0 too");
    }

    @Test
    void aRestoredFinishedParentReleasesItsChildrenAtOnce() throws Throwable {
        openShards(2);
        start(2);
        discover();
        kinesis.split(shardId(0), shardId(2), shardId(3));
        discover();
        finished(0, 0);
        KinesisSerializers.StateSerializer serializer = new KinesisSerializers.StateSerializer();
        byte[] checkpoint = serializer.serialize(enumerator.snapshotState(1L));
        assertEquals(byReader(0, shards(0), 1, shards(1)), assigned(), "checkpoint 1 has not completed here");

        // the job fails and is restored from checkpoint 1, which therefore completed
        start("TRIM_HORIZON", serializer.deserialize(serializer.getVersion(), checkpoint), 2);
        discover();
        assertEquals(byReader(0, shards(2), 1, shards(3)), assigned());

        // reader 0 restored shard 0's finished marker and reports it again: it is told at once
        finished(0, 0);
        assertEquals(Set.of(shardId(0)),
                ((FinishedShardsRecordedEvent) context.getSentSourceEvent().get(0).get(0)).shardIds);
    }

    /** Without checkpointing no checkpoint ever completes: children follow their parents' end at once. */
    @Test
    void withoutChildrenAfterCheckpointAChildIsAssignedWhenItsParentFinished() throws Throwable {
        openShards(2);
        Map<String, String> conf = new TreeMap<>();
        conf.put(KinesisSourceOptions.INIT_POSITION, "TRIM_HORIZON");
        conf.put(KinesisSourceOptions.CHILDREN_AFTER_CHECKPOINT, "false");
        start(KinesisSourceOptions.of(FakeKinesis.STREAM_ARN, conf), KinesisEnumeratorState.initial(), 2);
        discover();
        kinesis.split(shardId(0), shardId(2), shardId(3));
        discover();
        assertEquals(byReader(0, shards(0), 1, shards(1)), assigned(), "the children wait for shard 0");
        finished(0, 0);
        assertEquals(byReader(0, shards(0, 2, 3), 1, shards(1)), assigned(), "reader 0 read none once shard 0 ended");
    }

    @Test
    void readersHearOfAFinishedShardOnceACompletedCheckpointRecordsIt() throws Throwable {
        openShards(2);
        start(2);
        discover();
        finished(0, 0);
        enumerator.snapshotState(5L);
        finished(1, 1);
        enumerator.notifyCheckpointComplete(4L);
        assertEquals(Map.of(), context.getSentSourceEvent(), "checkpoint 4 holds neither shard");

        enumerator.notifyCheckpointComplete(5L);
        Map<Integer, List<SourceEvent>> sent = context.getSentSourceEvent();
        assertEquals(Set.of(0, 1), sent.keySet(), "every reader is told");
        for (List<SourceEvent> events : sent.values()) {
            assertEquals(1, events.size());
            assertEquals(Set.of(shardId(0)), ((FinishedShardsRecordedEvent) events.get(0)).shardIds,
                    "shard 1 finished after checkpoint 5 was taken");
        }

        // a reader restored from an older checkpoint reports shard 0 again: it is told at once
        finished(1, 0);
        List<SourceEvent> toReader1 = context.getSentSourceEvent().get(1);
        assertEquals(Set.of(shardId(0)), ((FinishedShardsRecordedEvent) toReader1.get(1)).shardIds);
    }

    @Test
    void aCheckpointThatNeverCompletesIsCoveredByTheNextOne() throws Throwable {
        openShards(2);
        start(1);
        discover();
        finished(0, 0);
        enumerator.snapshotState(7L);
        finished(0, 1);
        enumerator.snapshotState(8L);
        enumerator.notifyCheckpointComplete(8L);
        List<SourceEvent> events = context.getSentSourceEvent().get(0);
        assertEquals(1, events.size());
        assertEquals(Set.of(shardId(0), shardId(1)), ((FinishedShardsRecordedEvent) events.get(0)).shardIds);
    }
}
