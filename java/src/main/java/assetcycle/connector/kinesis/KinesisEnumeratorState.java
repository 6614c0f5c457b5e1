package assetcycle.connector.kinesis;

import javax.annotation.Nullable;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

/**
 * The enumerator's checkpointed state: the shards found so far and what became of them.
 *
 * <p>{@code unassigned}: found, not yet given to a reader (a child waits here until its parents
 * are finished); {@code assigned}: given to a reader and not finished (the reader's own state
 * holds its position); {@code finished}: read to the end. {@code lastSeenShardId} is where the
 * next ListShards (AFTER_SHARD_ID) continues; null before the first discovery.
 */
public final class KinesisEnumeratorState {

    @Nullable final String lastSeenShardId;
    final List<KinesisShardSplit> unassigned;
    final Set<String> assigned;
    final Set<String> finished;

    KinesisEnumeratorState(
            @Nullable String lastSeenShardId,
            List<KinesisShardSplit> unassigned,
            Set<String> assigned,
            Set<String> finished) {
        this.lastSeenShardId = lastSeenShardId;
        this.unassigned = new ArrayList<>(unassigned);
        this.assigned = new TreeSet<>(assigned);
        this.finished = new TreeSet<>(finished);
    }

    static KinesisEnumeratorState initial() {
        return new KinesisEnumeratorState(null, new ArrayList<>(), new TreeSet<>(), new TreeSet<>());
    }
}
