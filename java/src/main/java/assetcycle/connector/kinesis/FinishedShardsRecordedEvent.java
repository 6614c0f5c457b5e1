package assetcycle.connector.kinesis;

import org.apache.flink.api.connector.source.SourceEvent;

import java.util.Set;
import java.util.TreeSet;

/** Enumerator to readers: a completed checkpoint of the enumerator records these shards as finished. */
final class FinishedShardsRecordedEvent implements SourceEvent {

    private static final long serialVersionUID = 1L;

    final Set<String> shardIds;

    FinishedShardsRecordedEvent(Set<String> shardIds) {
        this.shardIds = new TreeSet<>(shardIds);
    }

    @Override
    public String toString() {
        return "FinishedShardsRecordedEvent" + shardIds;
    }
}
