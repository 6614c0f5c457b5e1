package assetcycle.connector.kinesis;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.util.InstantiationUtil;
import org.junit.jupiter.api.Test;

/** The source's options (the official connector's keys) and the source object Flink ships to the cluster. */
class KinesisSourceOptionsTest {

    private static final String ARN = FakeKinesis.STREAM_ARN;

    private static KinesisSourceOptions of(String... keyValues) {
        Map<String, String> conf = new HashMap<>();
        for (int i = 0; i < keyValues.length; i += 2) {
            conf.put(keyValues[i], keyValues[i + 1]);
        }
        return KinesisSourceOptions.of(ARN, conf);
    }

    private static String rejected(String arn, String... keyValues) {
        Map<String, String> conf = new HashMap<>();
        for (int i = 0; i < keyValues.length; i += 2) {
            conf.put(keyValues[i], keyValues[i + 1]);
        }
        return assertThrows(IllegalArgumentException.class, () -> KinesisSourceOptions.of(arn, conf)).getMessage();
    }

    @Test
    void defaultsFollowTheOfficialConnector() {
        long before = System.currentTimeMillis();
        KinesisSourceOptions options = of();
        long after = System.currentTimeMillis();
        assertEquals("trucks", options.streamName);
        assertEquals("us-east-1", options.region);
        assertEquals(null, options.endpoint);
        StartingPosition latest = options.initialStartingPosition();
        assertEquals(StartingPosition.Kind.AT_TIMESTAMP, latest.kind(), "LATEST: when the options were made");
        assertTrue(before <= latest.timestampMs() && latest.timestampMs() <= after, latest.toString());
        assertEquals(Duration.ofSeconds(10), options.discoveryInterval);
        assertTrue(options.childrenAfterCheckpoint);
        assertEquals(10_000, options.maxRecordsPerFetch);
        assertEquals(Duration.ofMillis(250), options.emptyFetchInterval);
        assertEquals(Duration.ZERO, options.nonEmptyFetchInterval);
        assertEquals(10, options.retryMaxAttempts);
        assertEquals(Duration.ofMillis(300), options.retryMinDelay);
        assertEquals(Duration.ofSeconds(10), options.retryMaxDelay);
    }

    @Test
    void startPositionsAndTimestampFormats() {
        assertEquals(StartingPosition.trimHorizon(),
                of("source.init.position", "trim_horizon").initialStartingPosition());
        long expected = 1_714_536_000_000L;
        for (String[] timestamp : new String[][] {
                {"1714536000"}, {"1714536000.0"}, {"2024-05-01T04:00:00Z"}, {"2024-05-01T06:00:00+02:00"},
                {"01/05/2024 04:00", "dd/MM/yyyy HH:mm"}}) {
            KinesisSourceOptions options = timestamp.length == 1
                    ? of("source.init.position", "AT_TIMESTAMP", "source.init.timestamp", timestamp[0])
                    : of("source.init.position", "AT_TIMESTAMP", "source.init.timestamp", timestamp[0],
                            "source.init.timestamp.format", timestamp[1]);
            assertEquals(StartingPosition.atTimestamp(expected), options.initialStartingPosition(), timestamp[0]);
        }
    }

    @Test
    void regionAndEndpointOverrides() {
        KinesisSourceOptions options = of("aws.region", "eu-west-1", "aws.endpoint", " http://127.0.0.1:4568 ");
        assertEquals("eu-west-1", options.region);
        assertEquals("http://127.0.0.1:4568", options.endpoint);
        assertEquals("eu-central-1",
                KinesisSourceOptions.of("arn:aws:kinesis:eu-central-1:1:stream/s", Map.of()).region);
    }

    @Test
    void childrenAfterCheckpointCanBeSwitchedOff() {
        assertEquals(false, of("source.shard.children-after-checkpoint", " FALSE ").childrenAfterCheckpoint);
        assertEquals(true, of("source.shard.children-after-checkpoint", "true").childrenAfterCheckpoint);
    }

    @Test
    void mistakesAreRefusedNamingTheKey() {
        assertTrue(rejected(ARN, "source.init.postion", "LATEST").contains("unknown Kinesis source option "
                + "source.init.postion"));
        assertTrue(rejected("arn:aws:kinesis:us-east-1:1:trucks").contains("stream ARN must look like"));
        assertTrue(rejected("arn:aws:kinesis::1:stream/s").contains("aws.region is required"));
        assertTrue(rejected(ARN, "source.reader.type", "EFO").contains("EFO is not supported"));
        assertTrue(rejected(ARN, "source.reader.type", "PUSH").contains("must be POLLING"));
        assertTrue(rejected(ARN, "source.init.position", "EARLIEST").contains("must be one of"));
        assertTrue(rejected(ARN, "source.init.position", "AT_TIMESTAMP").contains("source.init.timestamp is required"));
        assertTrue(rejected(ARN, "source.init.position", "AT_TIMESTAMP", "source.init.timestamp", "yesterday")
                .contains("ISO-8601"));
        assertTrue(rejected(ARN, "source.init.position", "AT_TIMESTAMP", "source.init.timestamp", "2024",
                "source.init.timestamp.format", "dd/MM/yyyy").contains("does not match"));
        assertTrue(rejected(ARN, "source.shard.discovery.interval", "10 ms").contains("at least 100 ms"));
        assertTrue(rejected(ARN, "source.shard.discovery.interval", "often").contains("must be a duration"));
        assertTrue(rejected(ARN, "source.shard.get-records.max-record-count", "10001").contains("between 1 and 10000"));
        assertTrue(rejected(ARN, "source.shard.children-after-checkpoint", "yes")
                .contains("source.shard.children-after-checkpoint must be true or false"));
        assertTrue(rejected(ARN, "retry-strategy.attempts.max", "ten").contains("must be an integer"));
        assertTrue(rejected(ARN, "retry-strategy.delay.min", "2 s", "retry-strategy.delay.max", "1 s")
                .contains("at least 2000 ms"));
    }

    @Test
    void theSourceSurvivesJavaSerializationAndIsUnbounded() throws Exception {
        Configuration conf = new Configuration();
        conf.setString("source.init.position", "TRIM_HORIZON");
        KinesisSource source = new KinesisSource(ARN, conf);
        KinesisSource shipped = InstantiationUtil.clone(source);
        assertEquals(source.describe(), shipped.describe());
        assertEquals(Boundedness.CONTINUOUS_UNBOUNDED, shipped.getBoundedness());
        assertEquals(assetcycle.connector.SourceRecords.TYPE, shipped.getProducedType());
        assertEquals(1, shipped.getSplitSerializer().getVersion());
        assertEquals(1, shipped.getEnumeratorCheckpointSerializer().getVersion());
    }
}
