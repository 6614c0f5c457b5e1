package assetcycle.connector.kinesis;

import software.amazon.awssdk.services.kinesis.model.GetShardIteratorRequest;
import software.amazon.awssdk.services.kinesis.model.ShardIteratorType;

import javax.annotation.Nullable;

import java.io.Serializable;
import java.time.Instant;
import java.util.Objects;

/** Where reading a shard (re)starts: its oldest record, a time, or after a sequence number. */
public final class StartingPosition implements Serializable {

    private static final long serialVersionUID = 1L;

    /** Kinds of start position (a subset of Kinesis' shard iterator types). */
    public enum Kind {
        TRIM_HORIZON,
        AT_TIMESTAMP,
        AFTER_SEQUENCE_NUMBER
    }

    private final Kind kind;
    private final long timestampMs;
    @Nullable private final String sequenceNumber;

    private StartingPosition(Kind kind, long timestampMs, @Nullable String sequenceNumber) {
        this.kind = kind;
        this.timestampMs = timestampMs;
        this.sequenceNumber = sequenceNumber;
    }

    /** The oldest record still in the shard. */
    public static StartingPosition trimHorizon() {
        return new StartingPosition(Kind.TRIM_HORIZON, 0L, null);
    }

    /** The first record that arrived at or after {@code timestampMs}. */
    public static StartingPosition atTimestamp(long timestampMs) {
        return new StartingPosition(Kind.AT_TIMESTAMP, timestampMs, null);
    }

    /** The record after {@code sequenceNumber} (resuming after the last record emitted). */
    public static StartingPosition afterSequenceNumber(String sequenceNumber) {
        return new StartingPosition(Kind.AFTER_SEQUENCE_NUMBER, 0L, Objects.requireNonNull(sequenceNumber));
    }

    public Kind kind() {
        return kind;
    }

    public long timestampMs() {
        return timestampMs;
    }

    @Nullable
    public String sequenceNumber() {
        return sequenceNumber;
    }

    /** Adds this position to a GetShardIterator request. */
    GetShardIteratorRequest.Builder applyTo(GetShardIteratorRequest.Builder request) {
        switch (kind) {
            case TRIM_HORIZON:
                return request.shardIteratorType(ShardIteratorType.TRIM_HORIZON);
            case AT_TIMESTAMP:
                return request.shardIteratorType(ShardIteratorType.AT_TIMESTAMP)
                        .timestamp(Instant.ofEpochMilli(timestampMs));
            default:
                return request.shardIteratorType(ShardIteratorType.AFTER_SEQUENCE_NUMBER)
                        .startingSequenceNumber(sequenceNumber);
        }
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof StartingPosition)) {
            return false;
        }
        StartingPosition other = (StartingPosition) o;
        return kind == other.kind
                && timestampMs == other.timestampMs
                && Objects.equals(sequenceNumber, other.sequenceNumber);
    }

    @Override
    public int hashCode() {
        return Objects.hash(kind, timestampMs, sequenceNumber);
    }

    @Override
    public String toString() {
        switch (kind) {
            case TRIM_HORIZON:
                return "TRIM_HORIZON";
            case AT_TIMESTAMP:
                return "AT_TIMESTAMP(" + Instant.ofEpochMilli(timestampMs) + ")";
            default:
                return "AFTER_SEQUENCE_NUMBER(" + sequenceNumber + ")";
        }
    }
}
