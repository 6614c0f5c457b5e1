package assetcycle.pipeline;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.OneInputStreamOperatorTestHarness;
import org.apache.flink.types.Row;
import org.junit.jupiter.api.Test;

class RecordBatcherTest {

    private static OneInputStreamOperatorTestHarness<Row, Row> harness(int maxRecords, long maxDelayMs)
            throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h =
                new OneInputStreamOperatorTestHarness<>(new RecordBatcher(maxRecords, maxDelayMs));
        h.setProcessingTime(0);
        h.open();
        return h;
    }

    private static void send(OneInputStreamOperatorTestHarness<Row, Row> h, int from, int to) throws Exception {
        for (int i = from; i < to; i++) {
            h.processElement(new StreamRecord<>(Row.of("pos" + i, "raw" + i)));
        }
    }

    /** The output as a list of batches (raw arrays) and watermarks, in order. */
    private static List<Object> output(OneInputStreamOperatorTestHarness<Row, Row> h) {
        List<Object> out = new ArrayList<>();
        for (Object element : h.getOutput()) {
            if (element instanceof StreamRecord) {
                Row batch = (Row) ((StreamRecord<?>) element).getValue();
                String[] positions = (String[]) batch.getField(0);
                String[] raws = (String[]) batch.getField(1);
                assertEquals(positions.length, raws.length);
                for (int i = 0; i < raws.length; i++) {
                    assertEquals(raws[i].replace("raw", "pos"), positions[i]);
                }
                out.add(raws);
            } else {
                out.add(element);
            }
        }
        return out;
    }

    private static String[] raws(int from, int to) {
        String[] raws = new String[to - from];
        for (int i = from; i < to; i++) {
            raws[i - from] = "raw" + i;
        }
        return raws;
    }

    @Test
    void fullBatchesLeaveAtOnceInArrivalOrder() throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h = harness(3, 100);
        send(h, 0, 7);
        List<Object> out = output(h);
        assertEquals(2, out.size());
        assertArrayEquals(raws(0, 3), (String[]) out.get(0));
        assertArrayEquals(raws(3, 6), (String[]) out.get(1));
        h.close();
    }

    @Test
    void aPartialBatchLeavesWhenItsFirstRecordHasWaitedMaxDelay() throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h = harness(100, 100);
        send(h, 0, 2);
        h.setProcessingTime(99);
        assertTrue(output(h).isEmpty());
        h.setProcessingTime(100);
        assertEquals(1, output(h).size());
        assertArrayEquals(raws(0, 2), (String[]) output(h).get(0));
        h.close();
    }

    @Test
    void aTimerOfAnEarlierBatchDoesNotCutTheNextOneShort() throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h = harness(2, 100);
        send(h, 0, 2); // full at t=0, its timer stays registered for t=100
        h.setProcessingTime(60);
        send(h, 2, 3); // new batch, due at t=160
        h.setProcessingTime(100);
        assertEquals(1, output(h).size());
        h.setProcessingTime(160);
        assertEquals(2, output(h).size());
        assertArrayEquals(raws(2, 3), (String[]) output(h).get(1));
        h.close();
    }

    @Test
    void aCheckpointNeverHoldsBufferedRecords() throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h = harness(100, 10_000);
        send(h, 0, 5);
        h.prepareSnapshotPreBarrier(1);
        h.snapshot(1, 1);
        assertEquals(1, output(h).size());
        assertArrayEquals(raws(0, 5), (String[]) output(h).get(0));
        h.prepareSnapshotPreBarrier(2);
        assertEquals(1, output(h).size(), "an empty buffer emits nothing");
        h.close();
    }

    @Test
    void endOfInputFlushes() throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h = harness(100, 10_000);
        send(h, 0, 4);
        h.endInput();
        assertEquals(1, output(h).size());
        assertArrayEquals(raws(0, 4), (String[]) output(h).get(0));
        h.close();
    }

    @Test
    void aWatermarkFollowsTheRecordsBeforeIt() throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h = harness(100, 10_000);
        send(h, 0, 3);
        h.processWatermark(new Watermark(42));
        send(h, 3, 4);
        h.processWatermark(new Watermark(43));
        List<Object> out = output(h);
        assertEquals(4, out.size());
        assertArrayEquals(raws(0, 3), (String[]) out.get(0));
        assertEquals(42, assertInstanceOf(Watermark.class, out.get(1)).getTimestamp());
        assertArrayEquals(raws(3, 4), (String[]) out.get(2));
        assertEquals(43, assertInstanceOf(Watermark.class, out.get(3)).getTimestamp());
        h.close();
    }

    @Test
    void nothingIsLostOrDuplicatedAcrossMixedFlushes() throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h = harness(7, 50);
        int sent = 0;
        for (int round = 0; round < 40; round++) {
            int n = (round * 5) % 11;
            send(h, sent, sent + n);
            sent += n;
            if (round % 3 == 0) {
                h.setProcessingTime(h.getProcessingTime() + 50);
            } else if (round % 3 == 1) {
                h.prepareSnapshotPreBarrier(round);
            }
        }
        h.endInput();
        List<String> seen = new ArrayList<>();
        for (Object batch : output(h)) {
            for (String raw : (String[]) batch) {
                seen.add(raw);
            }
        }
        assertEquals(List.of(raws(0, sent)), seen);
        h.close();
    }

    @Test
    void nonsenseLimitsAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> new RecordBatcher(0, 100));
        assertThrows(IllegalArgumentException.class, () -> new RecordBatcher(10, 0));
    }
}
