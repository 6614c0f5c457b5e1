package assetcycle.connector.file;

import org.apache.flink.api.connector.source.SourceSplit;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataInputView;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.apache.flink.core.memory.DataOutputView;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * One truck partition of a file: its lines whose truck the job's keyed operators give subtask
 * {@code partition} of {@code partitions}, read up to line {@code linesRead} ({@code offset} is the
 * byte offset just after that line; 0 and 0 before the first).
 */
public final class TruckLinesSplit implements SourceSplit {

    final String path;
    final int partition;
    final int partitions;
    final long offset;
    final long linesRead;

    TruckLinesSplit(String path, int partition, int partitions, long offset, long linesRead) {
        this.path = path;
        this.partition = partition;
        this.partitions = partitions;
        this.offset = offset;
        this.linesRead = linesRead;
    }

    /** The same partition, read up to line {@code lines} ending at byte {@code endOffset}. */
    TruckLinesSplit readTo(long endOffset, long lines) {
        return new TruckLinesSplit(path, partition, partitions, endOffset, lines);
    }

    @Override
    public String splitId() {
        return partition + "/" + partitions;
    }

    @Override
    public String toString() {
        return "TruckLinesSplit{" + path + ", partition " + splitId() + ", " + linesRead + " lines read}";
    }

    private static final int VERSION = 1;

    private static void write(DataOutputView out, TruckLinesSplit split) throws IOException {
        out.writeUTF(split.path);
        out.writeInt(split.partition);
        out.writeInt(split.partitions);
        out.writeLong(split.offset);
        out.writeLong(split.linesRead);
    }

    private static TruckLinesSplit read(DataInputView in) throws IOException {
        return new TruckLinesSplit(in.readUTF(), in.readInt(), in.readInt(), in.readLong(), in.readLong());
    }

    private static void checkVersion(int version) throws IOException {
        if (version != VERSION) {
            throw new IOException("unknown version of a truck lines split or of its enumerator's state: " + version);
        }
    }

    /** Serializer of a split (the readers' state in checkpoints and savepoints). */
    static final class Serializer implements SimpleVersionedSerializer<TruckLinesSplit> {
        @Override
        public int getVersion() {
            return VERSION;
        }

        @Override
        public byte[] serialize(TruckLinesSplit split) throws IOException {
            DataOutputSerializer out = new DataOutputSerializer(128);
            write(out, split);
            return out.getCopyOfBuffer();
        }

        @Override
        public TruckLinesSplit deserialize(int version, byte[] serialized) throws IOException {
            checkVersion(version);
            return read(new DataInputDeserializer(serialized));
        }
    }

    /** Serializer of the enumerator's state: the splits not assigned yet. */
    static final class ListSerializer implements SimpleVersionedSerializer<List<TruckLinesSplit>> {
        @Override
        public int getVersion() {
            return VERSION;
        }

        @Override
        public byte[] serialize(List<TruckLinesSplit> splits) throws IOException {
            DataOutputSerializer out = new DataOutputSerializer(256);
            out.writeInt(splits.size());
            for (TruckLinesSplit split : splits) {
                write(out, split);
            }
            return out.getCopyOfBuffer();
        }

        @Override
        public List<TruckLinesSplit> deserialize(int version, byte[] serialized) throws IOException {
            checkVersion(version);
            DataInputDeserializer in = new DataInputDeserializer(serialized);
            int count = in.readInt();
            List<TruckLinesSplit> splits = new ArrayList<>(count);
            for (int i = 0; i < count; i++) {
                splits.add(read(in));
            }
            return splits;
        }
    }
}
