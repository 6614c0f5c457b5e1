package assetcycle.connector.file;

import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.connector.source.SplitsAssignment;

import javax.annotation.Nullable;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/**
 * Hands each truck partition of the file to a reader when the reader registers: partition {@code p} to
 * subtask {@code p % parallelism} (at the parallelism the partitions were made for, every subtask reads
 * the trucks its keyed operators hold), a split given back by a failed reader to that reader again.
 * Then tells the reader that no more splits will come (the source is bounded). A restored job's
 * readers get their splits back from their own state; only splits never assigned are here.
 */
final class TruckLinesEnumerator implements SplitEnumerator<TruckLinesSplit, List<TruckLinesSplit>> {

    private final SplitEnumeratorContext<TruckLinesSplit> context;
    private final List<TruckLinesSplit> unassigned;
    private final Map<String, Integer> givenBackBy = new HashMap<>();

    TruckLinesEnumerator(SplitEnumeratorContext<TruckLinesSplit> context, List<TruckLinesSplit> unassigned) {
        this.context = context;
        this.unassigned = new ArrayList<>(unassigned);
    }

    @Override
    public void start() {}

    @Override
    public void handleSplitRequest(int subtaskId, @Nullable String requesterHostname) {
        // splits are assigned when a reader registers (addReader)
    }

    @Override
    public void addSplitsBack(List<TruckLinesSplit> splits, int subtaskId) {
        for (TruckLinesSplit split : splits) {
            unassigned.add(split);
            givenBackBy.put(split.splitId(), subtaskId);
        }
    }

    @Override
    public void addReader(int subtaskId) {
        int parallelism = context.currentParallelism();
        List<TruckLinesSplit> assigned = new ArrayList<>();
        for (Iterator<TruckLinesSplit> it = unassigned.iterator(); it.hasNext(); ) {
            TruckLinesSplit split = it.next();
            int reader = givenBackBy.getOrDefault(split.splitId(), split.partition % parallelism);
            if (reader == subtaskId) {
                assigned.add(split);
                givenBackBy.remove(split.splitId());
                it.remove();
            }
        }
        if (!assigned.isEmpty()) {
            context.assignSplits(new SplitsAssignment<>(Map.of(subtaskId, assigned)));
        }
        context.signalNoMoreSplits(subtaskId);
    }

    @Override
    public List<TruckLinesSplit> snapshotState(long checkpointId) {
        return new ArrayList<>(unassigned);
    }

    @Override
    public void close() {}
}
