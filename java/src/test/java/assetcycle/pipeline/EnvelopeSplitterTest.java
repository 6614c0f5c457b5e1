package assetcycle.pipeline;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;

import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.streaming.api.operators.ProcessOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.OneInputStreamOperatorTestHarness;
import org.apache.flink.types.Row;
import org.junit.jupiter.api.Test;

class EnvelopeSplitterTest {

    private static final RowTypeInfo CYCLE = new RowTypeInfo(Types.STRING, Types.LONG);
    private static final RowTypeInfo STATUS = new RowTypeInfo(Types.STRING, Types.INT);
    private static final RowTypeInfo ENVELOPE = new RowTypeInfo(Types.INT, CYCLE, STATUS);
    private static final int[] PART_BY_TAG = {1, 1, 2};

    private static OneInputStreamOperatorTestHarness<Row, Row> harness(EnvelopeSplitter splitter) throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h =
                new OneInputStreamOperatorTestHarness<>(new ProcessOperator<>(splitter));
        h.open();
        return h;
    }

    private static List<Row> rows(ConcurrentLinkedQueue<StreamRecord<Row>> records) {
        List<Row> out = new ArrayList<>();
        if (records != null) {
            records.forEach(r -> out.add(r.getValue()));
        }
        return out;
    }

    @Test
    void eachTagGoesToItsOwnSideOutputWithItsPartInOrder() throws Exception {
        EnvelopeSplitter splitter = new EnvelopeSplitter(ENVELOPE, PART_BY_TAG);
        OneInputStreamOperatorTestHarness<Row, Row> h = harness(splitter);
        h.processElement(new StreamRecord<>(Row.of(0, Row.of("tmp", 1L), null)));
        h.processElement(new StreamRecord<>(Row.of(2, null, Row.of("truck", 3))));
        h.processElement(new StreamRecord<>(Row.of(1, Row.of("closed", 2L), null)));
        h.processElement(new StreamRecord<>(Row.of(0, Row.of("tmp", 4L), null)));

        assertEquals(List.of(Row.of("tmp", 1L), Row.of("tmp", 4L)), rows(h.getSideOutput(splitter.outputTag(0))));
        assertEquals(List.of(Row.of("closed", 2L)), rows(h.getSideOutput(splitter.outputTag(1))));
        assertEquals(List.of(Row.of("truck", 3)), rows(h.getSideOutput(splitter.outputTag(2))));
        assertTrue(h.getOutput().isEmpty());
        assertEquals(CYCLE, splitter.outputTag(1).getTypeInfo());
        assertEquals(STATUS, splitter.outputTag(2).getTypeInfo());
    }

    @Test
    void anUnknownTagOrAMissingPartFailsLoudly() throws Exception {
        OneInputStreamOperatorTestHarness<Row, Row> h = harness(new EnvelopeSplitter(ENVELOPE, PART_BY_TAG));
        assertThrows(IllegalStateException.class, () -> h.processElement(new StreamRecord<>(Row.of(7, null, null))));
        assertThrows(IllegalStateException.class, () -> h.processElement(new StreamRecord<>(Row.of(2, null, null))));
    }

    @Test
    void aPartOutsideTheEnvelopeIsRejectedUpFront() {
        assertThrows(IllegalArgumentException.class, () -> new EnvelopeSplitter(ENVELOPE, new int[] {1, 3}));
        assertThrows(IllegalArgumentException.class, () -> new EnvelopeSplitter(ENVELOPE, new int[] {0}));
    }
}
