package assetcycle.connector.kinesis;

import org.apache.flink.api.connector.source.SourceEvent;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.connector.base.source.reader.SingleThreadMultiplexSourceReaderBase;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.types.Row;

import software.amazon.awssdk.services.kinesis.KinesisClient;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Function;

/**
 * The source reader: polls its shards in one fetcher thread (see {@link PollingShardReader}).
 *
 * <p>A shard read to its end is reported to the enumerator and kept as a finished marker in this
 * reader's checkpoints until the enumerator says a completed checkpoint of its own records it; a
 * restored marker is reported again. Gauge {@code millisBehindLatest}: the largest lag of this
 * reader's shards as of their last GetRecords.
 */
final class KinesisSourceReader
        extends SingleThreadMultiplexSourceReaderBase<KinesisRecord, Row, KinesisShardSplit, KinesisShardSplitState> {

    private final TreeMap<String, KinesisShardSplit> finishedMarkers = new TreeMap<>();

    KinesisSourceReader(SourceReaderContext context, KinesisSourceOptions options,
                        Function<KinesisSourceOptions, KinesisClient> clientFactory) {
        this(context, options, clientFactory, PollingShardReader.newLagMap());
    }

    private KinesisSourceReader(SourceReaderContext context, KinesisSourceOptions options,
                                Function<KinesisSourceOptions, KinesisClient> clientFactory, Map<String, Long> lag) {
        super(() -> new PollingShardReader(options, clientFactory.apply(options), lag),
                new KinesisRecordEmitter(options.streamName),
                context.getConfiguration(), context);
        context.metricGroup().gauge("millisBehindLatest",
                (Gauge<Long>) () -> lag.values().stream().mapToLong(Long::longValue).max().orElse(0L));
    }

    @Override
    public void addSplits(List<KinesisShardSplit> splits) {
        List<KinesisShardSplit> active = new ArrayList<>();
        TreeMap<String, KinesisShardSplit> restoredMarkers = new TreeMap<>();
        for (KinesisShardSplit split : splits) {
            if (split.isFinished()) {
                restoredMarkers.put(split.shardId(), split);
            } else {
                active.add(split);
            }
        }
        if (!restoredMarkers.isEmpty()) {
            finishedMarkers.putAll(restoredMarkers);
            context.sendSourceEventToCoordinator(new ShardsFinishedEvent(restoredMarkers.keySet()));
        }
        if (!active.isEmpty()) {
            super.addSplits(active);
        }
    }

    @Override
    protected void onSplitFinished(Map<String, KinesisShardSplitState> finishedSplitIds) {
        for (Map.Entry<String, KinesisShardSplitState> entry : finishedSplitIds.entrySet()) {
            finishedMarkers.put(entry.getKey(), entry.getValue().toSplit().asFinished());
        }
        context.sendSourceEventToCoordinator(new ShardsFinishedEvent(finishedSplitIds.keySet()));
    }

    @Override
    public List<KinesisShardSplit> snapshotState(long checkpointId) {
        List<KinesisShardSplit> state = new ArrayList<>(super.snapshotState(checkpointId));
        state.addAll(finishedMarkers.values());
        return state;
    }

    @Override
    public void handleSourceEvents(SourceEvent event) {
        if (event instanceof FinishedShardsRecordedEvent) {
            finishedMarkers.keySet().removeAll(((FinishedShardsRecordedEvent) event).shardIds);
        } else {
            super.handleSourceEvents(event);
        }
    }

    @Override
    protected KinesisShardSplitState initializedState(KinesisShardSplit split) {
        return new KinesisShardSplitState(split);
    }

    @Override
    protected KinesisShardSplit toSplitType(String splitId, KinesisShardSplitState state) {
        return state.toSplit();
    }
}
