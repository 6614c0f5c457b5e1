package assetcycle.connector.kinesis;

import org.apache.flink.api.connector.source.SourceEvent;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.connector.source.SplitsAssignment;
import org.apache.flink.util.FlinkRuntimeException;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.LimitExceededException;
import software.amazon.awssdk.services.kinesis.model.ListShardsRequest;
import software.amazon.awssdk.services.kinesis.model.ListShardsResponse;
import software.amazon.awssdk.services.kinesis.model.Shard;
import software.amazon.awssdk.services.kinesis.model.ShardFilter;
import software.amazon.awssdk.services.kinesis.model.ShardFilterType;

import javax.annotation.Nullable;

import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.function.Function;

/**
 * Finds the stream's shards (ListShards every {@code source.shard.discovery.interval}) and hands
 * them to the readers, a child shard only once all its parents were read to their end, so that
 * across a split or merge nothing is read twice or skipped and a key's records stay in order.
 *
 * <p>The first discovery lists the shards open at the start position (FROM_TRIM_HORIZON or
 * FROM_TIMESTAMP); later ones list only shards newer than the newest seen (AFTER_SHARD_ID), which
 * start at TRIM_HORIZON. A parent that was never listed (older than the start position) counts as
 * finished. A shard goes to the reader with the fewest shards, once every reader has registered.
 *
 * <p>Readers report finished shards with a {@link ShardsFinishedEvent}; once a completed checkpoint
 * of this enumerator records them, the readers are told ({@link FinishedShardsRecordedEvent}) and
 * drop the finished markers they kept in their own checkpoints meanwhile (an event sent between the
 * enumerator's and a reader's part of one checkpoint would otherwise be lost on restore, and the
 * children of that shard would never be read).
 *
 * <p>With {@code source.shard.children-after-checkpoint} (the default) a child waits for that same
 * completed checkpoint, not just for the event: a parent's last records may still be queued between
 * its reader and the downstream operators when the event arrives, and the child may go to another
 * reader, whose records Flink does not order after them. The event arrives after the reader emitted
 * the parent's last record, and a checkpoint's barrier leaves that reader after its enumerator
 * snapshot is taken; so once a checkpoint whose snapshot records the parent completes (aligned
 * barriers: every operator processed everything before them), every operator has processed the
 * parent's records. A restored enumerator counts its restored finished shards as recorded (their
 * checkpoint completed). Without the option a child is assigned as soon as its parents' events
 * arrived (for jobs without checkpointing, where no checkpoint ever completes).
 */
final class KinesisShardEnumerator implements SplitEnumerator<KinesisShardSplit, KinesisEnumeratorState> {

    private static final Logger LOG = LoggerFactory.getLogger(KinesisShardEnumerator.class);

    private final SplitEnumeratorContext<KinesisShardSplit> context;
    private final KinesisSourceOptions options;
    private final Function<KinesisSourceOptions, KinesisClient> clientFactory;
    private final TreeMap<String, KinesisShardSplit> unassigned = new TreeMap<>();
    private final Set<String> assigned;
    private final Set<String> finished;
    private final Map<Integer, Set<String>> shardsByReader = new HashMap<>();
    private final NavigableMap<Long, Set<String>> finishedBySnapshot = new TreeMap<>();
    private final Set<String> recorded = new TreeSet<>();
    @Nullable private volatile String lastSeenShardId;
    @Nullable private KinesisClient client;

    KinesisShardEnumerator(
            SplitEnumeratorContext<KinesisShardSplit> context,
            KinesisSourceOptions options,
            KinesisEnumeratorState state,
            Function<KinesisSourceOptions, KinesisClient> clientFactory) {
        this.context = context;
        this.options = options;
        this.clientFactory = clientFactory;
        this.lastSeenShardId = state.lastSeenShardId;
        for (KinesisShardSplit split : state.unassigned) {
            unassigned.put(split.shardId(), split);
        }
        this.assigned = new TreeSet<>(state.assigned);
        this.finished = new TreeSet<>(state.finished);
        this.recorded.addAll(state.finished);
    }

    @Override
    public void start() {
        client = clientFactory.apply(options);
        long intervalMs = options.discoveryInterval.toMillis();
        LOG.info("Kinesis source on {}: discovering shards every {} ms ({})", options.streamArn, intervalMs, options);
        context.callAsync(this::discoverShards, this::onShardsDiscovered, 0L, intervalMs);
    }

    /** Runs in a worker thread: the shards the next step should know about. */
    private Discovery discoverShards() {
        ShardFilter filter;
        StartingPosition start;
        if (lastSeenShardId == null) {
            start = options.initialStartingPosition();
            filter = start.kind() == StartingPosition.Kind.TRIM_HORIZON
                    ? ShardFilter.builder().type(ShardFilterType.FROM_TRIM_HORIZON).build()
                    : ShardFilter.builder().type(ShardFilterType.FROM_TIMESTAMP)
                            .timestamp(Instant.ofEpochMilli(start.timestampMs())).build();
        } else {
            start = StartingPosition.trimHorizon();
            filter = ShardFilter.builder().type(ShardFilterType.AFTER_SHARD_ID).shardId(lastSeenShardId).build();
        }
        List<Shard> shards = new ArrayList<>();
        String token = null;
        do {
            ListShardsRequest.Builder request = ListShardsRequest.builder();
            if (token == null) {
                request.streamARN(options.streamArn).shardFilter(filter);
            } else {
                request.nextToken(token);
            }
            ListShardsResponse response = client.listShards(request.build());
            shards.addAll(response.shards());
            token = response.nextToken();
        } while (token != null);
        return new Discovery(shards, start);
    }

    /** Runs in the coordinator thread with the result of {@link #discoverShards}. */
    private void onShardsDiscovered(@Nullable Discovery discovery, @Nullable Throwable error) {
        if (error != null) {
            if (error instanceof LimitExceededException) {
                LOG.warn("ListShards on {} throttled; retrying at the next discovery", options.streamArn);
                return;
            }
            throw new FlinkRuntimeException("cannot list the shards of " + options.streamArn, error);
        }
        List<Shard> shards = new ArrayList<>(discovery.shards);
        shards.sort(Comparator.comparing(Shard::shardId));
        int added = 0;
        for (Shard shard : shards) {
            String id = shard.shardId();
            if (isKnown(id)) {
                continue;
            }
            Set<String> parents = new TreeSet<>();
            if (shard.parentShardId() != null) {
                parents.add(shard.parentShardId());
            }
            if (shard.adjacentParentShardId() != null) {
                parents.add(shard.adjacentParentShardId());
            }
            unassigned.put(id, new KinesisShardSplit(id, discovery.start, parents, false));
            added++;
            if (lastSeenShardId == null || id.compareTo(lastSeenShardId) > 0) {
                lastSeenShardId = id;
            }
        }
        if (added > 0) {
            LOG.info("Kinesis source on {}: {} new shard(s), {} waiting, {} reading, {} finished",
                    options.streamArn, added, unassigned.size(), assigned.size(), finished.size());
        }
        assignReadyShards();
    }

    private boolean isKnown(String shardId) {
        return unassigned.containsKey(shardId) || assigned.contains(shardId) || finished.contains(shardId);
    }

    /**
     * Gives every shard whose parents are all done (see {@link #isDone}) to the least loaded reader,
     * once every reader has registered (the first to register would otherwise get every shard, and
     * after a failover the returned shards wait for their reader to come back).
     */
    private void assignReadyShards() {
        Set<Integer> readers = context.registeredReaders().keySet();
        if (readers.size() < context.currentParallelism()) {
            if (!unassigned.isEmpty()) {
                LOG.info("Kinesis source on {}: {} of {} readers registered; {} shard(s) wait", options.streamArn,
                        readers.size(), context.currentParallelism(), unassigned.size());
            }
            return;
        }
        Map<Integer, List<KinesisShardSplit>> assignment = new HashMap<>();
        Iterator<KinesisShardSplit> it = unassigned.values().iterator();
        while (it.hasNext()) {
            KinesisShardSplit split = it.next();
            boolean ready = split.parentShardIds().stream().allMatch(this::isDone);
            if (!ready) {
                continue;
            }
            int reader = readers.stream()
                    .min(Comparator.comparingInt((Integer r) -> shardsByReader.getOrDefault(r, Set.of()).size())
                            .thenComparingInt(r -> r))
                    .orElseThrow();
            it.remove();
            assigned.add(split.shardId());
            shardsByReader.computeIfAbsent(reader, r -> new TreeSet<>()).add(split.shardId());
            assignment.computeIfAbsent(reader, r -> new ArrayList<>()).add(split);
        }
        if (!assignment.isEmpty()) {
            LOG.info("Kinesis source on {}: assigning {}", options.streamArn, assignment);
            context.assignSplits(new SplitsAssignment<>(assignment));
        }
    }

    /**
     * Whether a parent no longer holds its children back: never listed (older than the start
     * position), or finished and, with {@code source.shard.children-after-checkpoint}, recorded by a
     * completed checkpoint.
     */
    private boolean isDone(String parentShardId) {
        if (!isKnown(parentShardId)) {
            return true;
        }
        return options.childrenAfterCheckpoint ? recorded.contains(parentShardId) : finished.contains(parentShardId);
    }

    @Override
    public void handleSplitRequest(int subtaskId, @Nullable String requesterHostname) {
        // splits are pushed as they become ready
    }

    @Override
    public void addSplitsBack(List<KinesisShardSplit> splits, int subtaskId) {
        Set<String> owned = shardsByReader.getOrDefault(subtaskId, new TreeSet<>());
        for (KinesisShardSplit split : splits) {
            owned.remove(split.shardId());
            if (split.isFinished() || finished.contains(split.shardId())) {
                continue;
            }
            assigned.remove(split.shardId());
            unassigned.put(split.shardId(), split);
        }
        assignReadyShards();
    }

    @Override
    public void addReader(int subtaskId) {
        assignReadyShards();
    }

    @Override
    public void handleSourceEvent(int subtaskId, SourceEvent event) {
        if (!(event instanceof ShardsFinishedEvent)) {
            LOG.warn("ignoring unexpected source event {} from subtask {}", event, subtaskId);
            return;
        }
        Set<String> shardIds = ((ShardsFinishedEvent) event).shardIds;
        Set<String> alreadyRecorded = new TreeSet<>();
        for (String id : shardIds) {
            assigned.remove(id);
            unassigned.remove(id);
            shardsByReader.getOrDefault(subtaskId, new TreeSet<>()).remove(id);
            finished.add(id);
            if (recorded.contains(id)) {
                alreadyRecorded.add(id);
            }
        }
        LOG.info("Kinesis source on {}: shard(s) {} finished (subtask {}){}", options.streamArn, shardIds, subtaskId,
                options.childrenAfterCheckpoint ? "; children wait for a completed checkpoint recording that" : "");
        if (!alreadyRecorded.isEmpty()) {
            context.sendEventToSourceReader(subtaskId, new FinishedShardsRecordedEvent(alreadyRecorded));
        }
        assignReadyShards();
    }

    @Override
    public KinesisEnumeratorState snapshotState(long checkpointId) {
        Set<String> notYetRecorded = new TreeSet<>(finished);
        notYetRecorded.removeAll(recorded);
        if (!notYetRecorded.isEmpty()) {
            finishedBySnapshot.put(checkpointId, notYetRecorded);
        }
        return new KinesisEnumeratorState(
                lastSeenShardId, new ArrayList<>(unassigned.values()), assigned, finished);
    }

    @Override
    public void notifyCheckpointComplete(long checkpointId) {
        Map<Long, Set<String>> done = finishedBySnapshot.headMap(checkpointId, true);
        if (done.isEmpty()) {
            return;
        }
        Set<String> ids = new TreeSet<>();
        done.values().forEach(ids::addAll);
        done.clear();
        recorded.addAll(ids);
        for (int reader : context.registeredReaders().keySet()) {
            context.sendEventToSourceReader(reader, new FinishedShardsRecordedEvent(ids));
        }
        assignReadyShards();
    }

    @Override
    public void close() {
        if (client != null) {
            client.close();
        }
    }

    /** The result of one ListShards round and where its new shards start. */
    private static final class Discovery {
        final List<Shard> shards;
        final StartingPosition start;

        Discovery(List<Shard> shards, StartingPosition start) {
            this.shards = shards;
            this.start = start;
        }
    }
}
