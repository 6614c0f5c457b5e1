package assetcycle.connector.kinesis;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.util.List;
import java.util.Set;

import org.junit.jupiter.api.Test;

/**
 * Splits and enumerator state survive a round trip, and bytes written by every earlier version
 * still read back as what they were written from (checkpoints and savepoints outlive the code).
 */
class KinesisSerializersTest {

    private static final KinesisSerializers.SplitSerializer SPLITS = new KinesisSerializers.SplitSerializer();
    private static final KinesisSerializers.StateSerializer STATES = new KinesisSerializers.StateSerializer();

    private static final KinesisShardSplit FROM_TRIM_HORIZON = new KinesisShardSplit(
            "shardId-000000000000", StartingPosition.trimHorizon(), Set.of(), false);
    private static final KinesisShardSplit MERGED_FROM_TIMESTAMP = new KinesisShardSplit(
            "shardId-000000000003", StartingPosition.atTimestamp(1714536000123L),
            Set.of("shardId-000000000001", "shardId-000000000002"), false);
    private static final KinesisShardSplit FINISHED_MARKER = new KinesisShardSplit(
            "shardId-000000000004",
            StartingPosition.afterSequenceNumber("49590338271490256608559692538361571095921575989136588898"),
            Set.of("shardId-000000000003"), true);
    private static final KinesisEnumeratorState STATE = new KinesisEnumeratorState(
            "shardId-000000000005",
            List.of(MERGED_FROM_TIMESTAMP, new KinesisShardSplit(
                    "shardId-000000000005", StartingPosition.trimHorizon(), Set.of("shardId-000000000003"), false)),
            Set.of("shardId-000000000003"),
            Set.of("shardId-000000000000", "shardId-000000000001", "shardId-000000000002"));

    // Written by version 1 (the first). Never regenerate these: a new version gets constants of its
    // own, and these stay to prove that checkpoints written by version 1 can still be restored.
    private static final byte[] V1_SPLIT_TRIM_HORIZON = hex(
            "0014736861726449642d303030303030303030303030000000000000000000000000000000");
    private static final byte[] V1_SPLIT_AT_TIMESTAMP_TWO_PARENTS = hex(
            "0014736861726449642d303030303030303030303033010000018f324f2a7b00000000020014736861726449642d3030"
            + "303030303030303030310014736861726449642d30303030303030303030303200");
    private static final byte[] V1_SPLIT_FINISHED_AFTER_SEQUENCE = hex(
            "0014736861726449642d3030303030303030303030340200000000000000000100383439353930333338323731343930"
            + "323536363038353539363932353338333631353731303935393231353735393839313336353838383938000000010014"
            + "736861726449642d30303030303030303030303301");
    private static final byte[] V1_STATE_INITIAL = hex("00000000000000000000000000");
    private static final byte[] V1_STATE = hex(
            "010014736861726449642d303030303030303030303035000000020014736861726449642d30303030303030303030"
            + "3033010000018f324f2a7b00000000020014736861726449642d3030303030303030303030310014736861726449"
            + "642d303030303030303030303032000014736861726449642d303030303030303030303035000000000000000000"
            + "00000000010014736861726449642d30303030303030303030303300000000010014736861726449642d30303030"
            + "3030303030303033000000030014736861726449642d3030303030303030303030300014736861726449642d3030"
            + "303030303030303030310014736861726449642d303030303030303030303032");

    private static byte[] hex(String text) {
        byte[] bytes = new byte[text.length() / 2];
        for (int i = 0; i < bytes.length; i++) {
            bytes[i] = (byte) Integer.parseInt(text.substring(2 * i, 2 * i + 2), 16);
        }
        return bytes;
    }

    private static KinesisShardSplit roundTrip(KinesisShardSplit split) throws IOException {
        return SPLITS.deserialize(SPLITS.getVersion(), SPLITS.serialize(split));
    }

    private static KinesisEnumeratorState roundTrip(KinesisEnumeratorState state) throws IOException {
        return STATES.deserialize(STATES.getVersion(), STATES.serialize(state));
    }

    private static void assertSameState(KinesisEnumeratorState expected, KinesisEnumeratorState actual) {
        assertEquals(expected.lastSeenShardId, actual.lastSeenShardId);
        assertEquals(expected.unassigned, actual.unassigned);
        assertEquals(expected.assigned, actual.assigned);
        assertEquals(expected.finished, actual.finished);
    }

    @Test
    void splitsOfEveryStartingPositionSurviveARoundTrip() throws IOException {
        for (KinesisShardSplit split : List.of(FROM_TRIM_HORIZON, MERGED_FROM_TIMESTAMP, FINISHED_MARKER,
                new KinesisShardSplit("shardId-000000000009", StartingPosition.afterSequenceNumber("1"),
                        Set.of("shardId-000000000007"), false))) {
            assertEquals(split, roundTrip(split));
        }
    }

    @Test
    void enumeratorStateSurvivesARoundTrip() throws IOException {
        assertSameState(STATE, roundTrip(STATE));
        KinesisEnumeratorState initial = roundTrip(KinesisEnumeratorState.initial());
        assertNull(initial.lastSeenShardId);
        assertTrue(initial.unassigned.isEmpty() && initial.assigned.isEmpty() && initial.finished.isEmpty());
    }

    @Test
    void version1SplitsStillRead() throws IOException {
        assertEquals(FROM_TRIM_HORIZON, SPLITS.deserialize(1, V1_SPLIT_TRIM_HORIZON));
        assertEquals(MERGED_FROM_TIMESTAMP, SPLITS.deserialize(1, V1_SPLIT_AT_TIMESTAMP_TWO_PARENTS));
        assertEquals(FINISHED_MARKER, SPLITS.deserialize(1, V1_SPLIT_FINISHED_AFTER_SEQUENCE));
    }

    @Test
    void version1EnumeratorStatesStillRead() throws IOException {
        assertSameState(STATE, STATES.deserialize(1, V1_STATE));
        assertSameState(KinesisEnumeratorState.initial(), STATES.deserialize(1, V1_STATE_INITIAL));
    }

    /** While version 1 is the current one, what it writes is exactly the stored bytes. */
    @Test
    void theCurrentVersionIsTheOneWhoseBytesAreStoredHere() throws IOException {
        assertEquals(1, SPLITS.getVersion(), "a new version needs its own stored bytes above");
        assertEquals(1, STATES.getVersion(), "a new version needs its own stored bytes above");
        assertArrayEquals(V1_SPLIT_FINISHED_AFTER_SEQUENCE, SPLITS.serialize(FINISHED_MARKER));
        assertArrayEquals(V1_STATE, STATES.serialize(STATE));
    }

    @Test
    void anUnknownVersionIsRefusedWithAClearError() {
        IOException split = assertThrows(IOException.class, () -> SPLITS.deserialize(2, V1_SPLIT_TRIM_HORIZON));
        assertTrue(split.getMessage().contains("unknown serialization version 2"), split.getMessage());
        IOException state = assertThrows(IOException.class, () -> STATES.deserialize(0, V1_STATE_INITIAL));
        assertTrue(state.getMessage().contains("unknown serialization version 0"), state.getMessage());
    }
}
