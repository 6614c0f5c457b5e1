package assetcycle.connector.file;

import assetcycle.connector.SourceRecords;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.types.Row;

import java.util.ArrayList;
import java.util.List;

/**
 * The lines of one file as {@code Row("file:<path>:<line>", line)} records (as
 * {@link LineNumberedTextFormat} reads them), read by every subtask: each keeps the lines of the trucks
 * whose keyed state its own subtask holds, so a truck's lines are batched and parsed where its cycle
 * operator runs, without crossing to another subtask (as a Kinesis reader's records are). Every reader
 * reads the whole file; a line's truck is its top-level {@code asset_guid}
 * ({@link assetcycle.pipeline.TruckPartitioner}).
 *
 * <p>The file is split into {@code partitions} truck partitions (the job's parallelism when it starts),
 * each a split that records how far it was read ({@link TruckLinesSplit}). A job restored at another
 * parallelism spreads the partitions over its readers: a reader holding several reads them in one pass,
 * in file order, and one holding none ends at once. Bounded: the job ends after the file.
 *
 * <p>From Python: {@code jvm.assetcycle.connector.file.TruckPartitionedFileSource(path, partitions,
 * max_parallelism)} wrapped in {@code pyflink.datastream.connectors.Source}.
 */
public final class TruckPartitionedFileSource
        implements Source<Row, TruckLinesSplit, List<TruckLinesSplit>>, ResultTypeQueryable<Row> {

    private static final long serialVersionUID = 1L;

    private final String path;
    private final int partitions;
    private final int maxParallelism;

    /** The file {@code path} in {@code partitions} truck partitions of a job of {@code maxParallelism}. */
    public TruckPartitionedFileSource(String path, int partitions, int maxParallelism) {
        if (partitions < 1 || partitions > maxParallelism) {
            throw new IllegalArgumentException("partitions must be 1.." + maxParallelism + ", got " + partitions);
        }
        this.path = path;
        this.partitions = partitions;
        this.maxParallelism = maxParallelism;
    }

    @Override
    public Boundedness getBoundedness() {
        return Boundedness.BOUNDED;
    }

    @Override
    public SourceReader<Row, TruckLinesSplit> createReader(SourceReaderContext readerContext) {
        return new TruckLinesReader(readerContext, maxParallelism);
    }

    @Override
    public SplitEnumerator<TruckLinesSplit, List<TruckLinesSplit>> createEnumerator(
            SplitEnumeratorContext<TruckLinesSplit> enumContext) {
        List<TruckLinesSplit> splits = new ArrayList<>(partitions);
        for (int partition = 0; partition < partitions; partition++) {
            splits.add(new TruckLinesSplit(path, partition, partitions, 0L, 0L));
        }
        return new TruckLinesEnumerator(enumContext, splits);
    }

    @Override
    public SplitEnumerator<TruckLinesSplit, List<TruckLinesSplit>> restoreEnumerator(
            SplitEnumeratorContext<TruckLinesSplit> enumContext, List<TruckLinesSplit> checkpoint) {
        return new TruckLinesEnumerator(enumContext, checkpoint);
    }

    @Override
    public SimpleVersionedSerializer<TruckLinesSplit> getSplitSerializer() {
        return new TruckLinesSplit.Serializer();
    }

    @Override
    public SimpleVersionedSerializer<List<TruckLinesSplit>> getEnumeratorCheckpointSerializer() {
        return new TruckLinesSplit.ListSerializer();
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return SourceRecords.TYPE;
    }
}
