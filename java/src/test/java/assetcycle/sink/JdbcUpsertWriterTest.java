package assetcycle.sink;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.ServerSocket;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.flink.api.common.operators.ProcessingTimeService;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.connector.base.sink.writer.TestSinkInitContext;
import org.apache.flink.metrics.groups.SinkWriterMetricGroup;
import org.apache.flink.metrics.testutils.MetricListener;
import org.apache.flink.runtime.metrics.groups.MetricsGroupTestUtils;
import org.apache.flink.streaming.runtime.tasks.TestProcessingTimeService;
import org.apache.flink.types.Row;
import org.apache.flink.util.SimpleUserCodeClassLoader;
import org.apache.flink.util.UserCodeClassLoader;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The upsert sink's writer against a real PostgreSQL: reduction by key, when batches are written,
 * parameter binding, and which errors are retried (an outage, for as long as it lasts) and which
 * fail the task (a bad batch, after {@code maxRetries}).
 */
class JdbcUpsertWriterTest {

    private static final SinkWriter.Context NO_CONTEXT = new SinkWriter.Context() {
        @Override
        public long currentWatermark() {
            return Long.MIN_VALUE;
        }

        @Override
        public Long timestamp() {
            return null;
        }
    };
    private static final int[] TEXT_TEXT = {Types.VARCHAR, Types.VARCHAR};

    private TestPostgres pg;
    private final List<SinkWriter<Row>> writers = new ArrayList<>();
    private InitContext context;

    /** Flink's sink writer test context, with metrics that can be read and a manual processing time. */
    private static final class InitContext extends TestSinkInitContext {
        final MetricListener metrics = new MetricListener();
        final TestProcessingTimeService time = new TestProcessingTimeService();

        @Override
        public SinkWriterMetricGroup metricGroup() {
            return MetricsGroupTestUtils.mockWriterMetricGroup(metrics.getMetricGroup());
        }

        @Override
        public ProcessingTimeService getProcessingTimeService() {
            return time;
        }

        @Override
        public UserCodeClassLoader getUserCodeClassLoader() {
            return SimpleUserCodeClassLoader.create(JdbcUpsertWriterTest.class.getClassLoader());
        }

        long counter(String name) {
            return metrics.getCounter("kinesisanalytics", "assetCycle", "sink", "kv", name).orElseThrow().getCount();
        }
    }

    @BeforeEach
    void createTable() throws SQLException {
        pg = TestPostgres.open();
        pg.execute("CREATE TABLE " + pg.schema + ".kv (k text PRIMARY KEY, v text CHECK (v <> 'BAD'))");
        context = new InitContext();
    }

    @AfterEach
    void dropSchema() throws Exception {
        for (SinkWriter<Row> writer : writers) {
            writer.close();
        }
        if (pg != null) {
            pg.close();
        }
    }

    private String upsert() {
        return "INSERT INTO " + pg.schema + ".kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";
    }

    private String insertOnly() {
        return "INSERT INTO " + pg.schema + ".kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING";
    }

    private SinkWriter<Row> writer(String url, String sql, int[] keys, boolean firstRowWins, int[] types,
                                   int batchSize, long flushIntervalMs, int maxRetries) throws IOException {
        JdbcUpsertSink sink = new JdbcUpsertSink("kv", url, pg.user, pg.password, sql, keys, firstRowWins, types,
                batchSize, flushIntervalMs, maxRetries, 1_000);
        SinkWriter<Row> writer = sink.createWriter(context);
        writers.add(writer);
        return writer;
    }

    private SinkWriter<Row> writer(String sql, boolean firstRowWins, int batchSize) throws IOException {
        return writer(pg.url(), sql, new int[] {0}, firstRowWins, TEXT_TEXT, batchSize, 0, 0);
    }

    private static void write(SinkWriter<Row> writer, String... keyValues) throws Exception {
        for (int i = 0; i < keyValues.length; i += 2) {
            writer.write(Row.of(keyValues[i], keyValues[i + 1]), NO_CONTEXT);
        }
    }

    private Map<String, String> table() throws SQLException {
        Map<String, String> rows = new LinkedHashMap<>();
        try (Statement statement = pg.admin().createStatement();
             ResultSet rs = statement.executeQuery("SELECT k, v FROM " + pg.schema + ".kv ORDER BY k")) {
            while (rs.next()) {
                rows.put(rs.getString(1), rs.getString(2));
            }
        }
        return rows;
    }

    private static final String[] CHANGES = {"a", "1", "b", "1", "a", "2", "c", "1", "a", "3", "b", "2", "a", "4"};

    @Test
    void theLastRowOfAKeyWinsWhereverBatchesEnd() throws Exception {
        for (int batchSize : new int[] {1, 2, 3, 100}) {
            pg.execute("TRUNCATE " + pg.schema + ".kv");
            SinkWriter<Row> writer = writer(upsert(), false, batchSize);
            write(writer, CHANGES);
            writer.flush(false);
            assertEquals(Map.of("a", "4", "b", "2", "c", "1"), table(), "batch size " + batchSize);
        }
    }

    @Test
    void theFirstRowOfAKeyWinsWhereverBatchesEnd() throws Exception {
        for (int batchSize : new int[] {1, 2, 3, 100}) {
            pg.execute("TRUNCATE " + pg.schema + ".kv");
            SinkWriter<Row> writer = writer(insertOnly(), true, batchSize);
            write(writer, CHANGES);
            writer.flush(false);
            assertEquals(Map.of("a", "1", "b", "1", "c", "1"), table(), "batch size " + batchSize);
        }
    }

    @Test
    void aBufferHoldsOneRowPerKey() throws Exception {
        SinkWriter<Row> lastWins = writer(insertOnly(), false, 100);
        write(lastWins, "a", "1", "a", "2", "b", "1");
        lastWins.flush(false);
        assertEquals(Map.of("a", "2", "b", "1"), table(), "last row kept: the insert-only statement saw only a=2");
        assertEquals(2, context.counter("sinkRowsWritten"));

        pg.execute("TRUNCATE " + pg.schema + ".kv");
        SinkWriter<Row> firstWins = writer(upsert(), true, 100);
        write(firstWins, "a", "1", "a", "2");
        firstWins.flush(false);
        assertEquals(Map.of("a", "1"), table(), "first row kept: the upsert saw only a=1");
    }

    @Test
    void rowsOfACompositeKeyAreReducedByAllItsFields() throws Exception {
        pg.execute("CREATE TABLE " + pg.schema + ".cycles (truck text, seq int, state text, PRIMARY KEY (truck, seq))");
        SinkWriter<Row> writer = writer(pg.url(), "INSERT INTO " + pg.schema + ".cycles VALUES (?, ?, ?) "
                + "ON CONFLICT (truck, seq) DO UPDATE SET state = EXCLUDED.state", new int[] {0, 1}, false,
                new int[] {Types.VARCHAR, Types.INTEGER, Types.VARCHAR}, 100, 0, 0);
        writer.write(Row.of("T1", 1, "LOAD_TIME"), NO_CONTEXT);
        writer.write(Row.of("T1", 2, "LOAD_TIME"), NO_CONTEXT);
        writer.write(Row.of("T2", 1, "LOAD_TIME"), NO_CONTEXT);
        writer.write(Row.of("T1", 1, "COMPLETE"), NO_CONTEXT);
        writer.flush(false);
        assertEquals(3, context.counter("sinkRowsWritten"));
        List<String> rows = new ArrayList<>();
        try (Statement statement = pg.admin().createStatement();
             ResultSet rs = statement.executeQuery("SELECT truck, seq, state FROM " + pg.schema
                     + ".cycles ORDER BY truck, seq")) {
            while (rs.next()) {
                rows.add(rs.getString(1) + "/" + rs.getInt(2) + "/" + rs.getString(3));
            }
        }
        assertEquals(List.of("T1/1/COMPLETE", "T1/2/LOAD_TIME", "T2/1/LOAD_TIME"), rows);
    }

    @Test
    void aFullBatchIsWrittenAtOnce() throws Exception {
        SinkWriter<Row> writer = writer(upsert(), false, 2);
        write(writer, "a", "1");
        assertEquals(Map.of(), table());
        write(writer, "a", "2");
        assertEquals(Map.of(), table(), "still one key");
        write(writer, "b", "1");
        assertEquals(Map.of("a", "2", "b", "1"), table());
    }

    @Test
    void waitingRowsAreWrittenAFlushIntervalAfterTheFirst() throws Exception {
        context.time.setCurrentTime(10_000);
        SinkWriter<Row> writer = writer(pg.url(), upsert(), new int[] {0}, false, TEXT_TEXT, 100, 1_000, 0);
        write(writer, "a", "1");
        context.time.setCurrentTime(10_500);
        write(writer, "b", "1");
        context.time.setCurrentTime(10_999);
        assertEquals(Map.of(), table());
        context.time.setCurrentTime(11_000);
        assertEquals(Map.of("a", "1", "b", "1"), table());

        write(writer, "c", "1");
        context.time.setCurrentTime(11_999);
        assertEquals(Map.of("a", "1", "b", "1"), table(), "the next interval starts with the next row");
        context.time.setCurrentTime(12_000);
        assertEquals(Map.of("a", "1", "b", "1", "c", "1"), table());
    }

    @Test
    void parametersAreBoundByTheirSqlType() throws Exception {
        pg.execute("CREATE TABLE " + pg.schema + ".typed (k text PRIMARY KEY, at timestamptz, n smallint, "
                + "score double precision, big bigint, note text)");
        int[] types = {Types.VARCHAR, Types.TIMESTAMP_WITH_TIMEZONE, Types.SMALLINT, Types.DOUBLE, Types.BIGINT,
                Types.VARCHAR};
        SinkWriter<Row> writer = writer(pg.url(), "INSERT INTO " + pg.schema + ".typed VALUES (?, ?, ?, ?, ?, ?)",
                new int[] {0}, false, types, 100, 0, 0);
        writer.write(Row.of("full", 1_714_536_000_123L, 7, 0.25, 1L << 40, "x"), NO_CONTEXT);
        writer.write(Row.of("nulls", null, null, null, null, null), NO_CONTEXT);
        writer.flush(false);
        try (Statement statement = pg.admin().createStatement();
             ResultSet rs = statement.executeQuery("SELECT k, at, n, score, big, note FROM " + pg.schema
                     + ".typed ORDER BY k")) {
            assertTrue(rs.next());
            assertEquals("full", rs.getString(1));
            assertEquals(OffsetDateTime.of(2024, 5, 1, 4, 0, 0, 123_000_000, ZoneOffset.UTC),
                    rs.getObject(2, OffsetDateTime.class).withOffsetSameInstant(ZoneOffset.UTC));
            assertEquals(7, rs.getShort(3));
            assertEquals(0.25, rs.getDouble(4));
            assertEquals(1L << 40, rs.getLong(5));
            assertEquals("x", rs.getString(6));
            assertTrue(rs.next());
            assertEquals("nulls", rs.getString(1));
            for (int column = 2; column <= 6; column++) {
                assertEquals(null, rs.getObject(column));
            }
        }
    }

    @Test
    void aBadBatchFailsAfterMaxRetriesAndWritesNothing() throws Exception {
        SinkWriter<Row> writer = writer(pg.url(), upsert(), new int[] {0}, false, TEXT_TEXT, 100, 0, 1);
        write(writer, "a", "1", "b", "BAD");
        IOException error = assertThrows(IOException.class, () -> writer.flush(false));
        assertTrue(error.getMessage().contains("kv sink") && error.getMessage().contains("23514"), error.getMessage());
        assertEquals(Map.of(), table(), "one transaction per batch: the good row is not written either");
        assertEquals(1, context.counter("sinkRetries"), "maxRetries = 1: tried twice");
    }

    @Test
    void dataErrorsAreNotOutages() throws SQLException {
        List<String> statements = List.of(
                "INSERT INTO " + pg.schema + ".kv VALUES ('a', 'BAD')",            // 23514 check violation
                "INSERT INTO " + pg.schema + ".kv VALUES (NULL, 'x')",             // 23502 not null
                "SELECT 1 / 0",                                                     // 22012 division by zero
                "SELECT 40000::smallint",                                           // 22003 out of range
                "SELECT * FROM " + pg.schema + ".missing",                          // 42P01 undefined table
                "SELEC 1");                                                         // 42601 syntax error
        try (Connection conn = pg.connect(); Statement statement = conn.createStatement()) {
            for (String sql : statements) {
                SQLException error = assertThrows(SQLException.class, () -> statement.execute(sql));
                assertFalse(JdbcUpsertWriter.isOutage(error), sql + " -> " + error.getSQLState());
            }
        }
    }

    @Test
    void anUnreachableOrRefusingDatabaseIsAnOutage() throws Exception {
        int closedPort;
        try (ServerSocket socket = new ServerSocket(0)) {
            closedPort = socket.getLocalPort();
        }
        SQLException refused = assertThrows(SQLException.class,
                () -> DriverManager.getConnection(pg.url(closedPort), credentials(pg.user)));
        assertTrue(JdbcUpsertWriter.isOutage(refused), refused.getSQLState() + " " + refused.getMessage());

        SQLException unknownRole = assertThrows(SQLException.class,
                () -> DriverManager.getConnection(pg.url(), credentials("no_such_role_" + pg.schema)));
        assertEquals("28", unknownRole.getSQLState().substring(0, 2));
        assertTrue(JdbcUpsertWriter.isOutage(unknownRole));

        try (Connection victim = pg.connect(); Statement statement = victim.createStatement()) {
            ResultSet pid = statement.executeQuery("SELECT pg_backend_pid()");
            pid.next();
            pg.execute("SELECT pg_terminate_backend(" + pid.getInt(1) + ")");
            SQLException terminated = assertThrows(SQLException.class, () -> statement.execute("SELECT 1"));
            assertTrue(JdbcUpsertWriter.isOutage(terminated), terminated.getSQLState() + " " + terminated.getMessage());
        }

        for (String state : new String[] {"08006", "40001", "40P01", "53300", "57P03", "58030", null}) {
            assertTrue(JdbcUpsertWriter.isOutage(new SQLException("x", state)), String.valueOf(state));
        }
        SQLException wrapped = new SQLException("batch failed", "23000");
        wrapped.initCause(new IOException("connection reset"));
        assertTrue(JdbcUpsertWriter.isOutage(wrapped), "an I/O error anywhere in the causes");
    }

    private Properties credentials(String user) {
        Properties props = new Properties();
        props.setProperty("user", user);
        if (!pg.password.isEmpty()) {
            props.setProperty("password", pg.password);
        }
        return props;
    }

    @Test
    void anOutageIsRetriedUntilTheDatabaseAnswers() throws Exception {
        try (FlakyProxy proxy = new FlakyProxy(pg.host, pg.port)) {
            proxy.refuseNext(2);
            // maxRetries 0: an outage is not a data error, it is retried however often it takes
            SinkWriter<Row> writer = writer(pg.url(proxy.port()), upsert(), new int[] {0}, false, TEXT_TEXT, 100, 0, 0);
            write(writer, "a", "1");
            writer.flush(false);
            assertEquals(2, proxy.refused());
            assertEquals(Map.of("a", "1"), table());
            assertEquals(2, context.counter("sinkRetries"));
            assertEquals(1, context.counter("sinkRowsWritten"));
        }
    }

    @Test
    void aConnectionLostWhileIdleIsReplaced() throws Exception {
        try (FlakyProxy proxy = new FlakyProxy(pg.host, pg.port)) {
            SinkWriter<Row> writer = writer(pg.url(proxy.port()), upsert(), new int[] {0}, false, TEXT_TEXT, 100, 0, 0);
            write(writer, "a", "1");
            writer.flush(false);
            proxy.dropConnections(); // e.g. the server restarted
            write(writer, "b", "1");
            writer.flush(false);
            assertEquals(Map.of("a", "1", "b", "1"), table());
            assertEquals(1, context.counter("sinkRetries"));
        }
    }

    @Test
    void closingNeverThrowsAndDropsWhatWasNotWritten() throws Exception {
        try (FlakyProxy proxy = new FlakyProxy(pg.host, pg.port)) {
            SinkWriter<Row> writer = writer(pg.url(proxy.port()), upsert(), new int[] {0}, false, TEXT_TEXT, 100, 0, 0);
            write(writer, "a", "1");
            writer.flush(false);
            write(writer, "b", "1");
            proxy.close();
            assertDoesNotThrow(writer::close);
            assertEquals(Map.of("a", "1"), table(), "b belongs to no completed checkpoint: it is read again after a restore");
        }
    }
}
