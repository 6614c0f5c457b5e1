package assetcycle.connector.kinesis;

import org.apache.flink.api.connector.source.SourceEvent;

import java.util.Set;
import java.util.TreeSet;

/** Reader to enumerator: these shards were read to their end. */
final class ShardsFinishedEvent implements SourceEvent {

    private static final long serialVersionUID = 1L;

    final Set<String> shardIds;

    ShardsFinishedEvent(Set<String> shardIds) {
        this.shardIds = new TreeSet<>(shardIds);
    }

    @Override
    public String toString() {
        return "ShardsFinishedEvent" + shardIds;
    }
}
