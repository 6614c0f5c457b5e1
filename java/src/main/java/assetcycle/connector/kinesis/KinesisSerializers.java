package assetcycle.connector.kinesis;

import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputSerializer;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

/** Versioned binary forms of splits and of the enumerator state (checkpoints and savepoints). */
final class KinesisSerializers {

    private static final int VERSION = 1;

    private KinesisSerializers() {}

    /** Serializer of {@link KinesisShardSplit}. */
    static final class SplitSerializer implements SimpleVersionedSerializer<KinesisShardSplit> {
        @Override
        public int getVersion() {
            return VERSION;
        }

        @Override
        public byte[] serialize(KinesisShardSplit split) throws IOException {
            DataOutputSerializer out = new DataOutputSerializer(128);
            writeSplit(out, split);
            return out.getCopyOfBuffer();
        }

        @Override
        public KinesisShardSplit deserialize(int version, byte[] serialized) throws IOException {
            checkVersion(version);
            return readSplit(new DataInputDeserializer(serialized));
        }
    }

    /** Serializer of {@link KinesisEnumeratorState}. */
    static final class StateSerializer implements SimpleVersionedSerializer<KinesisEnumeratorState> {
        @Override
        public int getVersion() {
            return VERSION;
        }

        @Override
        public byte[] serialize(KinesisEnumeratorState state) throws IOException {
            DataOutputSerializer out = new DataOutputSerializer(256);
            out.writeBoolean(state.lastSeenShardId != null);
            if (state.lastSeenShardId != null) {
                out.writeUTF(state.lastSeenShardId);
            }
            out.writeInt(state.unassigned.size());
            for (KinesisShardSplit split : state.unassigned) {
                writeSplit(out, split);
            }
            writeStrings(out, state.assigned);
            writeStrings(out, state.finished);
            return out.getCopyOfBuffer();
        }

        @Override
        public KinesisEnumeratorState deserialize(int version, byte[] serialized) throws IOException {
            checkVersion(version);
            DataInputDeserializer in = new DataInputDeserializer(serialized);
            String lastSeen = in.readBoolean() ? in.readUTF() : null;
            int count = in.readInt();
            List<KinesisShardSplit> unassigned = new ArrayList<>(count);
            for (int i = 0; i < count; i++) {
                unassigned.add(readSplit(in));
            }
            Set<String> assigned = readStrings(in);
            Set<String> finished = readStrings(in);
            return new KinesisEnumeratorState(lastSeen, unassigned, assigned, finished);
        }
    }

    private static void checkVersion(int version) throws IOException {
        if (version != VERSION) {
            throw new IOException("unknown serialization version " + version + " of the Kinesis source state");
        }
    }

    private static void writeSplit(DataOutputSerializer out, KinesisShardSplit split) throws IOException {
        out.writeUTF(split.shardId());
        StartingPosition position = split.startingPosition();
        out.writeByte(position.kind().ordinal());
        out.writeLong(position.timestampMs());
        out.writeBoolean(position.sequenceNumber() != null);
        if (position.sequenceNumber() != null) {
            out.writeUTF(position.sequenceNumber());
        }
        writeStrings(out, split.parentShardIds());
        out.writeBoolean(split.isFinished());
    }

    private static KinesisShardSplit readSplit(DataInputDeserializer in) throws IOException {
        String shardId = in.readUTF();
        StartingPosition.Kind kind = StartingPosition.Kind.values()[in.readByte()];
        long timestampMs = in.readLong();
        String sequenceNumber = in.readBoolean() ? in.readUTF() : null;
        StartingPosition position;
        switch (kind) {
            case TRIM_HORIZON:
                position = StartingPosition.trimHorizon();
                break;
            case AT_TIMESTAMP:
                position = StartingPosition.atTimestamp(timestampMs);
                break;
            default:
                position = StartingPosition.afterSequenceNumber(sequenceNumber);
        }
        Set<String> parents = readStrings(in);
        return new KinesisShardSplit(shardId, position, parents, in.readBoolean());
    }

    private static void writeStrings(DataOutputSerializer out, Collection<String> values) throws IOException {
        out.writeInt(values.size());
        for (String value : values) {
            out.writeUTF(value);
        }
    }

    private static Set<String> readStrings(DataInputDeserializer in) throws IOException {
        int count = in.readInt();
        Set<String> out = new TreeSet<>();
        for (int i = 0; i < count; i++) {
            out.add(in.readUTF());
        }
        return out;
    }
}
