package assetcycle.sink;

import static org.junit.jupiter.api.Assertions.fail;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;
import java.util.UUID;

import org.junit.jupiter.api.Assumptions;

/**
 * The PostgreSQL of the tests, from system properties {@code assetcycle.test.pg.host}, {@code .port},
 * {@code .user}, {@code .database} and optionally {@code .password} (tests/deploy/test_java_units.py
 * passes them). Without them a test fails with a message saying so, unless {@code
 * assetcycle.test.pg.skip=true} asks to skip the PostgreSQL tests. Each test gets a schema of its
 * own, dropped with everything in it afterwards.
 */
final class TestPostgres implements AutoCloseable {

    private static final String PREFIX = "assetcycle.test.pg.";

    final String host;
    final int port;
    final String user;
    final String password;
    final String database;
    final String schema = "junit_" + UUID.randomUUID().toString().replace("-", "").substring(0, 12);
    private final Connection admin;

    private TestPostgres() throws SQLException {
        host = required("host");
        port = Integer.parseInt(required("port"));
        user = required("user");
        database = required("database");
        password = System.getProperty(PREFIX + "password", "");
        admin = connect();
        admin.setAutoCommit(true);
        execute("CREATE SCHEMA " + schema);
    }

    /** A connection to the test database and a fresh schema, or a failure (or skip) saying what is missing. */
    static TestPostgres open() throws SQLException {
        if (Boolean.getBoolean(PREFIX + "skip")) {
            Assumptions.abort("PostgreSQL tests skipped: " + PREFIX + "skip=true");
        }
        return new TestPostgres();
    }

    private static String required(String key) {
        String value = System.getProperty(PREFIX + key);
        if (value == null || value.isEmpty()) {
            fail("PostgreSQL tests need -D" + PREFIX + "host=... -D" + PREFIX + "port=... -D" + PREFIX
                    + "user=... -D" + PREFIX + "database=... (tests/deploy/test_java_units.py passes them), or -D"
                    + PREFIX + "skip=true to skip them; " + PREFIX + key + " is not set");
        }
        return value;
    }

    String url() {
        return url(port);
    }

    /** The database's URL with another port (a proxy in front of it, or one where nothing listens). */
    String url(int otherPort) {
        return "jdbc:postgresql://" + host + ":" + otherPort + "/" + database;
    }

    Connection connect() throws SQLException {
        Properties props = new Properties();
        props.setProperty("user", user);
        if (!password.isEmpty()) {
            props.setProperty("password", password);
        }
        props.setProperty("connectTimeout", "10");
        return DriverManager.getConnection(url(), props);
    }

    void execute(String sql) throws SQLException {
        try (Statement statement = admin.createStatement()) {
            statement.execute(sql);
        }
    }

    Connection admin() {
        return admin;
    }

    @Override
    public void close() throws SQLException {
        try {
            execute("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
        } finally {
            admin.close();
        }
    }
}
