package assetcycle.pipeline;

import org.apache.flink.api.common.functions.Partitioner;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.types.Row;

/**
 * Spreads raw telemetry records {@code Row(position, raw)} over the parse subtasks by truck, so that a
 * source read by one subtask (a file, the simulator) is parsed by all of them while each truck's
 * records stay in order (all of them go to one subtask, in the order they were read).
 *
 * <p>The truck is the top-level {@code asset_guid} string of the record's JSON object, decoded as a
 * JSON parser decodes it (escapes; the last of duplicate keys), without building the object. A
 * record without one (malformed, not an object, another type) has the key "": the parse step
 * rejects it, wherever it goes.
 *
 * <p>A truck goes to the subtask that the keyed operators after the parse step (keyed by the truck,
 * PyFlink's {@code KeyByKeySelector}: the key is {@code Row.of(asset_guid)}) give its key, by the same
 * key-group assignment at the same max parallelism: with the parse step and the cycle operator at the
 * same parallelism, every record stays in its TaskManager from the parse step to the cycle operator
 * (no record crosses the network on that edge).
 */
public final class TruckPartitioner implements Partitioner<String> {

    private static final long serialVersionUID = 1L;
    private static final String FIELD = "asset_guid";

    private final int maxParallelism;

    /** Partitions as a keyed operator of {@code maxParallelism} key groups assigns the truck's key. */
    public TruckPartitioner(int maxParallelism) {
        this.maxParallelism = maxParallelism;
    }

    /**
     * {@code raw} partitioned by truck (see the class comment), at the parallelism of what follows, for
     * keyed operators of {@code maxParallelism} key groups.
     */
    public static DataStream<Row> byTruck(DataStream<Row> raw, int maxParallelism) {
        return raw.partitionCustom(new TruckPartitioner(maxParallelism), new RawTruckKey());
    }

    @Override
    public int partition(String key, int numPartitions) {
        return subtaskOfTruck(key, maxParallelism, numPartitions);
    }

    /**
     * The subtask, of {@code parallelism}, whose keyed operators of {@code maxParallelism} key groups
     * hold the truck of the raw record {@code raw} (its top-level {@code asset_guid}, "" without one).
     */
    public static int subtaskOfRecord(String raw, int maxParallelism, int parallelism) {
        return subtaskOfTruck(assetGuid(raw), maxParallelism, parallelism);
    }

    private static int subtaskOfTruck(String assetGuid, int maxParallelism, int parallelism) {
        return KeyGroupRangeAssignment.assignKeyToParallelOperator(Row.of(assetGuid), maxParallelism, parallelism);
    }

    /** The truck of a raw record (its field 1). */
    public static final class RawTruckKey implements KeySelector<Row, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public String getKey(Row record) {
            Object raw = record.getField(1);
            return raw instanceof String ? assetGuid((String) raw) : "";
        }
    }

    /** The top-level {@code asset_guid} string of a JSON object, or "" when there is none. */
    static String assetGuid(String json) {
        Scanner s = new Scanner(json);
        try {
            s.skipSpace();
            if (!s.take('{')) {
                return "";
            }
            String found = "";
            s.skipSpace();
            if (s.take('}')) {
                return "";
            }
            while (true) {
                s.skipSpace();
                String key = s.string();
                s.skipSpace();
                s.expect(':');
                s.skipSpace();
                if (FIELD.equals(key)) {
                    found = s.peek() == '"' ? s.string() : skipped(s);
                } else {
                    s.skipValue();
                }
                s.skipSpace();
                if (s.take('}')) {
                    return found;
                }
                s.expect(',');
            }
        } catch (IllegalStateException | IndexOutOfBoundsException e) {
            return "";
        }
    }

    private static String skipped(Scanner s) {
        s.skipValue();
        return "";
    }

    /** A cursor over JSON text; throws IllegalStateException / IndexOutOfBoundsException on bad input. */
    private static final class Scanner {
        private final String text;
        private int at;

        Scanner(String text) {
            this.text = text;
        }

        char peek() {
            return text.charAt(at);
        }

        boolean take(char c) {
            if (at < text.length() && text.charAt(at) == c) {
                at++;
                return true;
            }
            return false;
        }

        void expect(char c) {
            if (!take(c)) {
                throw new IllegalStateException("expected " + c);
            }
        }

        void skipSpace() {
            while (at < text.length()) {
                char c = text.charAt(at);
                if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                    return;
                }
                at++;
            }
        }

        String string() {
            expect('"');
            StringBuilder out = null;
            int start = at;
            while (true) {
                char c = text.charAt(at++);
                if (c == '"') {
                    return out == null ? text.substring(start, at - 1) : out.toString();
                }
                if (c == '\\') {
                    if (out == null) {
                        out = new StringBuilder(text.substring(start, at - 1));
                    }
                    char e = text.charAt(at++);
                    switch (e) {
                        case 'b': out.append('\b'); break;
                        case 'f': out.append('\f'); break;
                        case 'n': out.append('\n'); break;
                        case 'r': out.append('\r'); break;
                        case 't': out.append('\t'); break;
                        case 'u':
                            out.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
                            at += 4;
                            break;
                        case '"': case '\\': case '/': out.append(e); break;
                        default: throw new IllegalStateException("bad escape");
                    }
                } else if (c < 0x20) {
                    throw new IllegalStateException("control character in a string");
                } else if (out != null) {
                    out.append(c);
                }
            }
        }

        void skipValue() {
            char c = peek();
            if (c == '"') {
                string();
            } else if (c == '{' || c == '[') {
                char close = c == '{' ? '}' : ']';
                at++;
                skipSpace();
                if (take(close)) {
                    return;
                }
                while (true) {
                    skipSpace();
                    if (close == '}') {
                        string();
                        skipSpace();
                        expect(':');
                        skipSpace();
                    }
                    skipValue();
                    skipSpace();
                    if (take(close)) {
                        return;
                    }
                    expect(',');
                }
            } else {
                int start = at;
                while (at < text.length() && ",}] \t\n\r".indexOf(text.charAt(at)) < 0) {
                    at++;
                }
                if (at == start) {
                    throw new IllegalStateException("value expected");
                }
            }
        }
    }
}
