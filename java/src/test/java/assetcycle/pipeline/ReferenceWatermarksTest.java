package assetcycle.pipeline;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.runtime.watermarkstatus.WatermarkStatus;
import org.apache.flink.streaming.util.OneInputStreamOperatorTestHarness;
import org.junit.jupiter.api.Test;

class ReferenceWatermarksTest {

    private static OneInputStreamOperatorTestHarness<Tuple3<String, String, String>, Tuple3<String, String, String>>
            harness() throws Exception {
        OneInputStreamOperatorTestHarness<Tuple3<String, String, String>, Tuple3<String, String, String>> h =
                new OneInputStreamOperatorTestHarness<>(new ReferenceWatermarks<>(0, "loaded"));
        h.open();
        return h;
    }

    private static StreamRecord<Tuple3<String, String, String>> update(String kind, String key) {
        return new StreamRecord<>(Tuple3.of(kind, key, "{}"));
    }

    /** What left the operator: "kind:key" per record, "IDLE"/"ACTIVE" per status, the timestamp per watermark. */
    private static List<String> output(
            OneInputStreamOperatorTestHarness<Tuple3<String, String, String>, Tuple3<String, String, String>> h) {
        List<String> out = new ArrayList<>();
        for (Object element : h.getOutput()) {
            if (element instanceof StreamRecord) {
                Tuple3<?, ?, ?> value = (Tuple3<?, ?, ?>) ((StreamRecord<?>) element).getValue();
                out.add(value.f0 + ":" + value.f1);
            } else if (element instanceof WatermarkStatus) {
                out.add(((WatermarkStatus) element).isIdle() ? "IDLE" : "ACTIVE");
            } else if (element instanceof Watermark) {
                out.add(Long.toString(((Watermark) element).getTimestamp()));
            }
        }
        return out;
    }

    @Test
    void holdsEventTimeUntilTheFirstCompleteLoadThenIsIdleForGood() throws Exception {
        var h = harness();
        h.processElement(update("asset", "t1"));
        h.processElement(update("site", "s1"));
        h.processWatermark(new Watermark(5));
        assertEquals(List.of("asset:t1", "site:s1"), output(h), "no watermark and no status before the load ends");
        h.processElement(update("loaded", ""));
        h.processElement(update("site", "s2"));
        h.processElement(update("loaded", ""));
        assertEquals(List.of("asset:t1", "site:s1", "loaded:", "IDLE", "site:s2", "loaded:"), output(h));
    }

    @Test
    void upstreamWatermarksAndStatusesAreNotPassedOn() throws Exception {
        var h = harness();
        h.processElement(update("loaded", ""));
        h.processWatermarkStatus(WatermarkStatus.ACTIVE);
        h.processWatermark(Watermark.MAX_WATERMARK); // the end of a bounded snapshot
        h.processWatermarkStatus(WatermarkStatus.IDLE);
        assertEquals(List.of("loaded:", "IDLE"), output(h));
    }

    @Test
    void refusesANegativeFieldOrNoMarker() {
        assertThrows(IllegalArgumentException.class, () -> new ReferenceWatermarks<>(-1, "loaded"));
        assertThrows(IllegalArgumentException.class, () -> new ReferenceWatermarks<>(0, null));
    }
}
