package assetcycle.pipeline;

import org.apache.flink.api.common.functions.Partitioner;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.runtime.state.KeyGroupRangeAssignment;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.types.Row;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

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
    private static final byte[] FIELD_UTF8 = "asset_guid".getBytes(StandardCharsets.UTF_8);

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
     * hold the truck of the raw record in the first {@code length} bytes of {@code utf8} (its top-level
     * {@code asset_guid}, "" without one).
     */
    public static int subtaskOfRecord(byte[] utf8, int length, int maxParallelism, int parallelism) {
        return subtaskOfTruck(assetGuid(utf8, length), maxParallelism, parallelism);
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
        byte[] utf8 = json.getBytes(StandardCharsets.UTF_8);
        return assetGuid(utf8, utf8.length);
    }

    /**
     * The top-level {@code asset_guid} string of a JSON object, its text the first {@code length} bytes
     * of {@code utf8}, or "" when there is none.
     */
    public static String assetGuid(byte[] utf8, int length) {
        Scanner s = new Scanner(utf8, length);
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
                boolean truck = s.keyIs(FIELD_UTF8);
                s.skipSpace();
                s.expect(':');
                s.skipSpace();
                if (truck) {
                    found = s.peek() == '"' ? s.string(true) : skipped(s);
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

    /**
     * A cursor over JSON text in UTF-8 (structural characters are ASCII, and no byte of a multi-byte
     * character is one); throws IllegalStateException / IndexOutOfBoundsException on bad input.
     */
    private static final class Scanner {
        private final byte[] text;
        private final int length;
        private int at;

        Scanner(byte[] text, int length) {
            this.text = text;
            this.length = length;
        }

        byte peek() {
            if (at >= length) {
                throw new IndexOutOfBoundsException("end of the record");
            }
            return text[at];
        }

        private byte next() {
            byte b = peek();
            at++;
            return b;
        }

        boolean take(char c) {
            if (at < length && text[at] == c) {
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
            while (at < length) {
                byte c = text[at];
                if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                    return;
                }
                at++;
            }
        }

        /** Reads a string; whether its value is {@code key} (UTF-8), without building it when unescaped. */
        boolean keyIs(byte[] key) {
            int start = at + 1;
            String escaped = string(false);
            if (escaped != null) {
                return escaped.equals(new String(key, StandardCharsets.UTF_8));
            }
            return Arrays.equals(text, start, at - 1, key, 0, key.length);
        }

        /**
         * Reads a string. Its value when {@code build} or when it has escapes (decoded), else null
         * (its bytes are then those between the quotes).
         */
        String string(boolean build) {
            expect('"');
            StringBuilder out = null;
            int run = at;
            while (true) {
                byte c = next();
                if (c == '"') {
                    if (out == null) {
                        return build ? new String(text, run, at - 1 - run, StandardCharsets.UTF_8) : null;
                    }
                    return out.append(new String(text, run, at - 1 - run, StandardCharsets.UTF_8)).toString();
                }
                if (c == '\\') {
                    if (out == null) {
                        out = new StringBuilder();
                    }
                    out.append(new String(text, run, at - 1 - run, StandardCharsets.UTF_8));
                    byte e = next();
                    switch (e) {
                        case 'b': out.append('\b'); break;
                        case 'f': out.append('\f'); break;
                        case 'n': out.append('\n'); break;
                        case 'r': out.append('\r'); break;
                        case 't': out.append('\t'); break;
                        case 'u':
                            if (at + 4 > length) {
                                throw new IndexOutOfBoundsException("end of the record");
                            }
                            out.append((char) Integer.parseInt(new String(text, at, 4, StandardCharsets.US_ASCII), 16));
                            at += 4;
                            break;
                        case '"': case '\\': case '/': out.append((char) e); break;
                        default: throw new IllegalStateException("bad escape");
                    }
                    run = at;
                } else if (c >= 0 && c < 0x20) {
                    throw new IllegalStateException("control character in a string");
                }
            }
        }

        void skipValue() {
            byte c = peek();
            if (c == '"') {
                string(false);
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
                        string(false);
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
                while (at < length && !endsValue(text[at])) {
                    at++;
                }
                if (at == start) {
                    throw new IllegalStateException("value expected");
                }
            }
        }

        private static boolean endsValue(byte b) {
            return b == ',' || b == '}' || b == ']' || b == ' ' || b == '\t' || b == '\n' || b == '\r';
        }
    }
}
