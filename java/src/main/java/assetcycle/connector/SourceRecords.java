package assetcycle.connector;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.types.Row;

/**
 * The record type every telemetry source of the job emits: {@code Row(position, raw)}, both strings.
 *
 * <p>{@code position} says where the record came from, in the form the dead-letter table stores:
 * {@code file:<path>:<line>} or {@code kinesis:<stream>:<shard id>:<sequence number>}.
 */
public final class SourceRecords {

    /** {@code ROW<position STRING, raw STRING>}. */
    public static final TypeInformation<Row> TYPE =
            Types.ROW_NAMED(new String[] {"position", "raw"}, Types.STRING, Types.STRING);

    private SourceRecords() {}
}
