package assetcycle.sink;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.types.Row;

import java.io.IOException;
import java.util.Arrays;

/**
 * Writes rows into one PostgreSQL table with an idempotent upsert statement, at least once.
 *
 * <p>Rows are buffered (reduced by primary key: the last row of a key wins, or the first one with
 * {@code firstRowWins}, the rule of an {@code ON CONFLICT DO NOTHING} statement, so that which row
 * of a key ends in the table does not depend on where batches happen to end) and written in one
 * transaction per batch: when {@code batchSize} rows wait, {@code flushIntervalMs} after the first
 * waiting row, at every checkpoint (so a completed checkpoint implies its rows are in the table)
 * and at the end of input. While PostgreSQL is unreachable (connection, authentication, resource or
 * operator-intervention errors) a write is retried with backoff for as long as it takes: the task
 * keeps running and back-pressures its inputs, nothing is dropped, and the outage is logged once
 * when it starts and once when it ends. Other SQL errors fail the task after {@code maxRetries}
 * attempts (Flink then restarts from the last checkpoint). {@link SinkWriter#close()} never throws:
 * rows not yet written belong to no completed checkpoint and are read again after a restore, so
 * closing a failed task cannot take its TaskManager down with it (Flink treats an exception while
 * it cleans up a failed task as fatal for the whole TaskManager).
 *
 * <p>Input rows hold the statement's parameters in order: {@code String}, {@code Double},
 * {@code Integer}, {@code Short} or {@code Long}; {@code sqlTypes} gives the {@link java.sql.Types}
 * code of each parameter, used for nulls and to bind a {@code Long} of a
 * {@code TIMESTAMP_WITH_TIMEZONE} parameter as epoch milliseconds (a UTC {@code timestamptz}) and an
 * {@code Integer} of a {@code SMALLINT} parameter as a short.
 */
public final class JdbcUpsertSink implements Sink<Row> {
    private static final long serialVersionUID = 1L;

    final String name;
    final String url;
    final String username;
    final String password;
    final String upsertSql;
    final int[] keyFields;
    final boolean firstRowWins;
    final int[] sqlTypes;
    final int batchSize;
    final long flushIntervalMs;
    final int maxRetries;
    final long maxBackoffMs;

    /**
     * @param name what the sink writes (a table kind: metric label and log name)
     * @param url {@code jdbc:postgresql://...}
     * @param upsertSql {@code INSERT ... ON CONFLICT ...} with one {@code ?} per row field
     * @param keyFields row positions of the primary key (buffered rows are reduced by it)
     * @param firstRowWins keep a key's first buffered row instead of its last (for an insert-only,
     *     {@code DO NOTHING} statement, where the first row written is the one that stays)
     * @param maxRetries attempts for errors that are not a database outage
     * @param maxBackoffMs longest wait between two attempts during an outage
     */
    public JdbcUpsertSink(String name, String url, String username, String password, String upsertSql,
                          int[] keyFields, boolean firstRowWins, int[] sqlTypes, int batchSize,
                          long flushIntervalMs, int maxRetries, long maxBackoffMs) {
        this.name = name;
        this.url = url;
        this.username = username;
        this.password = password;
        this.upsertSql = upsertSql;
        this.keyFields = keyFields.clone();
        this.firstRowWins = firstRowWins;
        this.sqlTypes = sqlTypes.clone();
        this.batchSize = Math.max(1, batchSize);
        this.flushIntervalMs = flushIntervalMs;
        this.maxRetries = Math.max(0, maxRetries);
        this.maxBackoffMs = Math.max(100, maxBackoffMs);
    }

    @Override
    public SinkWriter<Row> createWriter(WriterInitContext context) throws IOException {
        return new JdbcUpsertWriter(this, context);
    }

    @Override
    public String toString() {
        return "JdbcUpsertSink{" + name + " -> " + url + " as " + username + ", keys " + Arrays.toString(keyFields)
                + (firstRowWins ? " (first row wins)" : "")
                + ", batch " + batchSize + "/" + flushIntervalMs + " ms}";
    }
}
