package assetcycle.connector.kinesis;

import org.apache.flink.api.connector.source.SourceSplit;

import java.util.Collections;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;

/**
 * One shard of the stream: where to read it from and which shards it was split or merged from.
 *
 * <p>A split marked {@code finished} carries no work: a reader keeps it in its checkpoints after
 * reading the shard to its end until the enumerator's own checkpointed state records the shard as
 * finished (see {@link KinesisSourceReader}).
 */
public final class KinesisShardSplit implements SourceSplit {

    private final String shardId;
    private final StartingPosition startingPosition;
    private final Set<String> parentShardIds;
    private final boolean finished;

    public KinesisShardSplit(
            String shardId, StartingPosition startingPosition, Set<String> parentShardIds, boolean finished) {
        this.shardId = Objects.requireNonNull(shardId);
        this.startingPosition = Objects.requireNonNull(startingPosition);
        this.parentShardIds = Collections.unmodifiableSet(new TreeSet<>(parentShardIds));
        this.finished = finished;
    }

    @Override
    public String splitId() {
        return shardId;
    }

    public String shardId() {
        return shardId;
    }

    public StartingPosition startingPosition() {
        return startingPosition;
    }

    public Set<String> parentShardIds() {
        return parentShardIds;
    }

    public boolean isFinished() {
        return finished;
    }

    /** This shard as a finished marker. */
    public KinesisShardSplit asFinished() {
        return new KinesisShardSplit(shardId, startingPosition, parentShardIds, true);
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof KinesisShardSplit)) {
            return false;
        }
        KinesisShardSplit other = (KinesisShardSplit) o;
        return shardId.equals(other.shardId)
                && startingPosition.equals(other.startingPosition)
                && parentShardIds.equals(other.parentShardIds)
                && finished == other.finished;
    }

    @Override
    public int hashCode() {
        return Objects.hash(shardId, startingPosition, parentShardIds, finished);
    }

    @Override
    public String toString() {
        return "KinesisShardSplit{" + shardId + " from " + startingPosition + ", parents " + parentShardIds
                + (finished ? ", finished" : "") + "}";
    }
}
