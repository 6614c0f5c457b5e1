package assetcycle.pipeline;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.types.Row;
import org.junit.jupiter.api.Test;

class TruckPartitionerTest {

    private static String key(String raw) {
        return new TruckPartitioner.RawTruckKey().getKey(Row.of("file:x:1", raw));
    }

    @Test
    void theTruckIsTheTopLevelAssetGuidAsAJsonParserReadsIt() {
        assertEquals("T-1", key("{\"asset_guid\":\"T-1\",\"site_guid\":\"S\",\"latitude\":-22.7}"));
        assertEquals("T-1", key(" {\n \"site_guid\" : \"S\" , \"asset_guid\" :\t\"T-1\" }"));
        assertEquals("T-2", key("{\"meta\":{\"asset_guid\":\"T-1\",\"x\":[1,{\"a\":\"}\"}]},\"asset_guid\":\"T-2\"}"));
        assertEquals("T-3", key("{\"asset_guid\":\"T-1\",\"asset_guid\":\"T-3\"}"), "the last of duplicate keys");
        assertEquals("T\"é/4\u00e9", key("{\"asset_guid\":\"T\\\"\\u00e9\\/4é\"}"));
        assertEquals("T-5", key("{\"n\":null,\"b\":true,\"f\":-1.5e3,\"e\":{},\"l\":[],\"asset_guid\":\"T-5\"}"));
    }

    @Test
    void theTruckIsReadFromTheFirstLengthBytesOfABufferAndAnEscapedKeyCounts() {
        byte[] line = "{\"site_guid\":\"Sé\u2603\",\"asset\\u005fguid\":\"T-6\"}".getBytes(StandardCharsets.UTF_8);
        byte[] buffer = Arrays.copyOf(line, line.length + 40);
        System.arraycopy("},\"asset_guid\":\"T-7\"}".getBytes(StandardCharsets.UTF_8), 0, buffer, line.length, 20);
        assertEquals("T-6", TruckPartitioner.assetGuid(buffer, line.length));
        assertEquals("", TruckPartitioner.assetGuid(buffer, line.length - 1), "cut short: no object");
        assertEquals(TruckPartitioner.subtaskOfRecord(buffer, line.length, 128, 3), new TruckPartitioner(128).partition("T-6", 3));
    }

    @Test
    void aRecordWithoutATruckHasTheEmptyKey() {
        assertEquals("", key("not json"));
        assertEquals("", key("[\"asset_guid\",\"T-1\"]"));
        assertEquals("", key("{\"asset_guid\":17}"));
        assertEquals("", key("{\"asset_guid\":\"T-1\""));
        assertEquals("", key("{\"asset_guid\":\"T-1\",}"));
        assertEquals("", key("{\"asset_guid\":\"T\\q\"}"));
        assertEquals("", key("{}"));
        assertEquals("", key(""));
        assertEquals("", new TruckPartitioner.RawTruckKey().getKey(Row.of("p", null)));
    }

    @Test
    void trucksSpreadOverThePartitionsTheSameWayEveryTime() {
        TruckPartitioner partitioner = new TruckPartitioner(128);
        for (int n : new int[] {1, 2, 3, 8}) {
            Map<Integer, Integer> sizes = new HashMap<>();
            for (int t = 0; t < 200; t++) {
                String truck = "truck-" + t;
                int p = partitioner.partition(truck, n);
                assertTrue(p >= 0 && p < n);
                assertEquals(p, partitioner.partition(new String(truck.toCharArray()), n));
                sizes.merge(p, 1, Integer::sum);
            }
            assertEquals(n, sizes.size());
            for (int size : sizes.values()) {
                assertTrue(size > 200 / n / 2, "200 trucks over " + n + " partitions: " + sizes);
            }
        }
    }

    @Test
    void aTruckGoesToTheSubtaskOfTheCycleOperatorThatHoldsItsKey() {
        // the parse step emits (asset_guid, group); the keyed operators after it key by PyFlink's
        // KeyByKeySelector, whose key is a new Row(1) holding field 0 (flink-python is not a dependency here)
        for (int maxParallelism : new int[] {128, 256}) {
            TruckPartitioner partitioner = new TruckPartitioner(maxParallelism);
            for (int n : new int[] {1, 2, 3, 7}) {
                for (int t = 0; t < 200; t++) {
                    String truck = "truck-" + t;
                    Row key = new Row(1);
                    key.setField(0, truck);
                    assertEquals(KeyGroupRangeAssignment.assignKeyToParallelOperator(key, maxParallelism, n),
                            partitioner.partition(truck, n), truck + " at parallelism " + n);
                }
            }
        }
    }
}
