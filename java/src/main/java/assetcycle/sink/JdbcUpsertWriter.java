package assetcycle.sink;

import org.apache.flink.api.common.operators.ProcessingTimeService;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.types.Row;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.sql.Connection;
import java.sql.Driver;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.sql.Types;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

/** The writer of {@link JdbcUpsertSink}: runs in the task thread (timers come through the mailbox). */
final class JdbcUpsertWriter implements SinkWriter<Row> {
    private static final Logger LOG = LoggerFactory.getLogger(JdbcUpsertWriter.class);
    private static final String DRIVER = "org.postgresql.Driver";
    private static final long FIRST_BACKOFF_MS = 500;

    private final JdbcUpsertSink spec;
    private final ProcessingTimeService timers;
    private final ClassLoader classLoader;
    private final String where;
    private final Map<Object, Row> buffer = new LinkedHashMap<>();
    private final Counter retries;
    private final Counter rowsWritten;
    private volatile long oldestUnwrittenMs;
    private boolean timerArmed;
    private Connection connection;
    private PreparedStatement statement;

    JdbcUpsertWriter(JdbcUpsertSink spec, WriterInitContext context) {
        this.spec = spec;
        this.timers = context.getProcessingTimeService();
        this.classLoader = context.getUserCodeClassLoader().asClassLoader();
        this.where = spec.name + " sink (subtask " + context.getTaskInfo().getIndexOfThisSubtask() + ")";
        MetricGroup group = context.metricGroup().addGroup("kinesisanalytics").addGroup("assetCycle")
                .addGroup("sink", spec.name);
        this.retries = group.counter("sinkRetries");
        this.rowsWritten = group.counter("sinkRowsWritten");
        // how long the oldest row not written yet has been waiting: about the flush interval normally, the
        // time since the last successful write during an outage
        group.gauge("sinkTimeSinceLastWriteMs", () -> {
            long oldest = oldestUnwrittenMs;
            return oldest == 0 ? 0L : System.currentTimeMillis() - oldest;
        });
    }

    @Override
    public void write(Row row, Context context) throws IOException, InterruptedException {
        Object key = key(row);
        if (spec.firstRowWins) {
            buffer.putIfAbsent(key, row);
        } else {
            buffer.remove(key); // the newest row of a key goes last
            buffer.put(key, row);
        }
        if (oldestUnwrittenMs == 0) {
            oldestUnwrittenMs = System.currentTimeMillis();
        }
        if (buffer.size() >= spec.batchSize) {
            writeBuffer();
        } else if (!timerArmed && spec.flushIntervalMs > 0) {
            timerArmed = true;
            timers.registerTimer(timers.getCurrentProcessingTime() + spec.flushIntervalMs, time -> {
                timerArmed = false;
                writeBuffer();
            });
        }
    }

    @Override
    public void flush(boolean endOfInput) throws IOException, InterruptedException {
        writeBuffer();
    }

    /** Never throws (see JdbcUpsertSink): unwritten rows are replayed from the last checkpoint. */
    @Override
    public void close() {
        if (!buffer.isEmpty()) {
            LOG.info("{}: closing with {} unwritten row(s); they are not part of a completed checkpoint and are "
                    + "written again after a restore", where, buffer.size());
            buffer.clear();
        }
        disconnect();
    }

    private Object key(Row row) {
        int[] fields = spec.keyFields;
        if (fields.length == 1) {
            return row.getField(fields[0]);
        }
        List<Object> key = new ArrayList<>(fields.length);
        for (int field : fields) {
            key.add(row.getField(field));
        }
        return key;
    }

    private void writeBuffer() throws IOException, InterruptedException {
        if (buffer.isEmpty()) {
            return;
        }
        int dataErrors = 0;
        int attempt = 0;
        long outageStartMs = 0;
        boolean reconnected = false;
        while (true) {
            boolean reused = connection != null;
            try {
                writeBatch();
                int rows = buffer.size();
                buffer.clear();
                oldestUnwrittenMs = 0;
                rowsWritten.inc(rows);
                if (outageStartMs != 0) {
                    LOG.warn("{}: PostgreSQL writes resumed after {} s ({} retries)", where,
                            (System.currentTimeMillis() - outageStartMs) / 1000, attempt);
                }
                return;
            } catch (SQLException e) {
                rollbackQuietly();
                boolean outage = isOutage(e);
                if (!outage && ++dataErrors > spec.maxRetries) {
                    throw new IOException(where + ": writing " + buffer.size() + " row(s) failed: " + describe(e), e);
                }
                if (outage) {
                    disconnect();
                }
                if (outage && reused && !reconnected) {
                    // e.g. the server restarted while this connection was idle: reconnect at once
                    LOG.info("{}: the connection to PostgreSQL was lost ({}); reconnecting", where, describe(e));
                    retries.inc();
                    reconnected = true;
                    continue;
                }
                if (outageStartMs == 0) {
                    outageStartMs = System.currentTimeMillis();
                    LOG.warn("{}: writing {} row(s) to PostgreSQL failed ({}); retrying with backoff until it "
                            + "succeeds", where, buffer.size(), describe(e));
                }
                retries.inc();
                long backoff = Math.min(spec.maxBackoffMs, FIRST_BACKOFF_MS << Math.min(attempt, 10));
                attempt++;
                Thread.sleep(backoff); // interruptible: cancelling the task ends the wait
            }
        }
    }

    private void writeBatch() throws SQLException {
        if (connection == null) {
            connect();
        }
        int[] types = spec.sqlTypes;
        for (Row row : buffer.values()) {
            for (int i = 0; i < types.length; i++) {
                Object value = row.getField(i);
                if (value == null) {
                    statement.setNull(i + 1, types[i]);
                } else if (types[i] == Types.TIMESTAMP_WITH_TIMEZONE && value instanceof Long) { // epoch ms
                    statement.setObject(i + 1, OffsetDateTime.ofInstant(Instant.ofEpochMilli((Long) value),
                            ZoneOffset.UTC));
                } else if (types[i] == Types.SMALLINT && value instanceof Integer
                        && (Integer) value == ((Integer) value).shortValue()) { // else PostgreSQL says out of range
                    statement.setShort(i + 1, ((Integer) value).shortValue());
                } else {
                    statement.setObject(i + 1, value);
                }
            }
            statement.addBatch();
        }
        statement.executeBatch();
        connection.commit();
    }

    private void connect() throws SQLException {
        Driver driver;
        try {
            driver = (Driver) Class.forName(DRIVER, true, classLoader).getDeclaredConstructor().newInstance();
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("PostgreSQL driver " + DRIVER + " not found in the job's jar", e);
        }
        Properties props = new Properties();
        props.setProperty("user", spec.username);
        if (spec.password != null && !spec.password.isEmpty()) {
            props.setProperty("password", spec.password);
        }
        props.setProperty("connectTimeout", "10");
        props.setProperty("loginTimeout", "10");
        props.setProperty("socketTimeout", "60");
        props.setProperty("tcpKeepAlive", "true");
        props.setProperty("ApplicationName", "asset-cycle " + spec.name);
        Connection conn = driver.connect(spec.url, props);
        if (conn == null) {
            throw new SQLException("the PostgreSQL driver does not accept " + spec.url, "08001");
        }
        try {
            conn.setAutoCommit(false);
            statement = conn.prepareStatement(spec.upsertSql);
        } catch (SQLException e) {
            closeQuietly(conn);
            throw e;
        }
        connection = conn;
    }

    private void rollbackQuietly() {
        if (connection != null) {
            try {
                statement.clearBatch();
                connection.rollback();
            } catch (SQLException ignored) {
                disconnect();
            }
        }
    }

    private void disconnect() {
        if (connection != null) {
            closeQuietly(connection);
        }
        connection = null;
        statement = null;
    }

    private static void closeQuietly(Connection conn) {
        try {
            conn.close();
        } catch (SQLException ignored) {
            // the connection is being dropped anyway
        }
    }

    /** Whether an error means "PostgreSQL is not available right now" rather than "this batch is wrong". */
    static boolean isOutage(SQLException e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof java.io.IOException) {
                return true;
            }
            if (t instanceof SQLException) {
                String state = ((SQLException) t).getSQLState();
                if (state == null || Arrays.asList("08", "28", "40", "53", "57", "58").contains(
                        state.length() >= 2 ? state.substring(0, 2) : state)) {
                    return true;
                }
            }
        }
        return false;
    }

    private static String describe(SQLException e) {
        SQLException next = e.getNextException();
        SQLException shown = next != null ? next : e;
        String message = String.valueOf(shown.getMessage()).split("\n", 2)[0];
        return (shown.getSQLState() != null ? shown.getSQLState() + " " : "") + message;
    }
}
