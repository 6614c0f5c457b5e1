package assetcycle.connector.file;

import assetcycle.pipeline.TruckPartitioner;

import org.apache.flink.api.connector.source.ReaderOutput;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.core.fs.Path;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.metrics.Counter;
import org.apache.flink.types.Row;

import javax.annotation.Nullable;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * Reads the file once for all the truck partitions it holds, from the earliest position among them, and
 * emits each line of a held partition that is past that partition's position, in file order, as
 * {@code Row("file:<path>:<line>", line)}. Held partitions interleave in file order, as they appear in
 * the file, so a reader given several (after a restore at a lower parallelism) reads each truck's lines
 * in order and every partition's lines once.
 *
 * <p>Reading happens in the task's thread, {@link #LINES_PER_POLL} lines per call. The checkpointed
 * position of a partition is where the reading stands (every line before it was emitted or belongs to
 * another partition), or its own position when it was restored ahead of that. At the end of the file
 * the partitions are done and leave the state.
 */
final class TruckLinesReader implements SourceReader<Row, TruckLinesSplit> {

    private static final int LINES_PER_POLL = 1024;

    private final int maxParallelism;
    private final Counter recordsIn;
    private final Map<Integer, TruckLinesSplit> held = new HashMap<>();
    private int partitions;  // of the held splits (one partitioning per job)
    @Nullable private LineScanner reading;
    private String prefix = "";
    private boolean noMoreSplits;
    private CompletableFuture<Void> available = new CompletableFuture<>();

    TruckLinesReader(SourceReaderContext context, int maxParallelism) {
        this.maxParallelism = maxParallelism;
        this.recordsIn = context.metricGroup().getIOMetricGroup().getNumRecordsInCounter();
    }

    @Override
    public void start() {}

    @Override
    public InputStatus pollNext(ReaderOutput<Row> output) throws IOException {
        if (reading == null && !startReading()) {
            return noMoreSplits ? InputStatus.END_OF_INPUT : InputStatus.NOTHING_AVAILABLE;
        }
        LineScanner lines = reading;
        for (int i = 0; i < LINES_PER_POLL; i++) {
            if (!lines.advance()) {
                lines.close();
                reading = null;
                held.clear();
                return noMoreSplits ? InputStatus.END_OF_INPUT : InputStatus.NOTHING_AVAILABLE;
            }
            TruckLinesSplit split = held.get(partitionOfLine(lines));
            if (split != null && lines.lineNumber() > split.linesRead) {
                output.collect(Row.of(prefix + lines.lineNumber(), lines.text()));
                recordsIn.inc();
            }
        }
        return InputStatus.MORE_AVAILABLE;
    }

    /** Opens the file at the earliest position of the held partitions; false when none is held. */
    private boolean startReading() throws IOException {
        TruckLinesSplit first = null;
        for (TruckLinesSplit split : held.values()) {
            if (first == null || split.linesRead < first.linesRead) {
                first = split;
            }
        }
        if (first == null) {
            return false;
        }
        Path path = new Path(first.path);
        reading = LineScanner.open(path, first.offset, first.linesRead);
        prefix = "file:" + path.getPath() + ":";
        return true;
    }

    /** The partition of the current line: its truck's, found in its bytes (only lines kept are decoded). */
    private int partitionOfLine(LineScanner lines) {
        return partitions == 1 ? 0
                : TruckPartitioner.subtaskOfRecord(lines.bytes(), lines.length(), maxParallelism, partitions);
    }

    /** A held split with the position the reading has reached for it. */
    private TruckLinesSplit current(TruckLinesSplit split) {
        LineScanner lines = reading;
        return lines != null && lines.lineNumber() > split.linesRead
                ? split.readTo(lines.offset(), lines.lineNumber())
                : split;
    }

    @Override
    public List<TruckLinesSplit> snapshotState(long checkpointId) {
        List<TruckLinesSplit> state = new ArrayList<>(held.size());
        for (TruckLinesSplit split : held.values()) {
            state.add(current(split));
        }
        return state;
    }

    @Override
    public CompletableFuture<Void> isAvailable() {
        if (reading != null || !held.isEmpty() || noMoreSplits) {
            return CompletableFuture.completedFuture(null);
        }
        if (available.isDone()) {
            available = new CompletableFuture<>();
        }
        return available;
    }

    @Override
    public void addSplits(List<TruckLinesSplit> splits) {
        if (reading != null) {  // read again from the earliest position, the new partitions included
            held.replaceAll((partition, split) -> current(split));
            closeReading();
        }
        for (TruckLinesSplit split : splits) {
            TruckLinesSplit other = held.isEmpty() ? split : held.values().iterator().next();
            if (!other.path.equals(split.path) || other.partitions != split.partitions) {
                throw new IllegalStateException("a reader holds the partitions of one file and one partitioning: "
                        + other + " and " + split);
            }
            held.put(split.partition, split);
            partitions = split.partitions;
        }
        available.complete(null);
    }

    @Override
    public void notifyNoMoreSplits() {
        noMoreSplits = true;
        available.complete(null);
    }

    private void closeReading() {
        if (reading != null) {
            try {
                reading.close();
            } catch (IOException e) {
                // only read from: nothing is lost
            }
            reading = null;
        }
    }

    @Override
    public void close() {
        closeReading();
    }
}
