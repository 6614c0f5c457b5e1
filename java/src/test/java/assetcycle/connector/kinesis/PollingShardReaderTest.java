package assetcycle.connector.kinesis;

import static assetcycle.connector.kinesis.FakeKinesis.shardId;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;

import org.apache.flink.connector.base.source.reader.RecordsWithSplitIds;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsAddition;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import software.amazon.awssdk.awscore.exception.AwsErrorDetails;
import software.amazon.awssdk.core.exception.SdkClientException;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.GetRecordsRequest;
import software.amazon.awssdk.services.kinesis.model.GetRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.GetShardIteratorRequest;
import software.amazon.awssdk.services.kinesis.model.GetShardIteratorResponse;
import software.amazon.awssdk.services.kinesis.model.KinesisException;
import software.amazon.awssdk.services.kinesis.model.KmsThrottlingException;
import software.amazon.awssdk.services.kinesis.model.LimitExceededException;
import software.amazon.awssdk.services.kinesis.model.ProvisionedThroughputExceededException;
import software.amazon.awssdk.services.kinesis.model.ShardIteratorType;

/** The split reader (its fetch loop driven directly) against an in-memory stream with scripted faults. */
class PollingShardReaderTest {

    /** Far more fetches than any test needs; a test that reaches it has hung. */
    private static final int MAX_FETCHES = 20_000;

    private final FakeKinesis kinesis = new FakeKinesis();
    private final Map<String, Long> lag = PollingShardReader.newLagMap();
    private final List<String> read = new ArrayList<>();
    private final List<String> finished = new ArrayList<>();
    private final List<Long> arrivals = new ArrayList<>();
    private PollingShardReader reader;

    @AfterEach
    void close() {
        if (reader != null) {
            reader.close();
        }
    }

    /** TRIM_HORIZON, pages of two records, no pause between polls, back-off of 1-2 ms. */
    private static KinesisSourceOptions options(Map<String, String> extra) {
        Map<String, String> conf = new TreeMap<>();
        conf.put(KinesisSourceOptions.INIT_POSITION, "TRIM_HORIZON");
        conf.put(KinesisSourceOptions.MAX_RECORDS, "2");
        conf.put(KinesisSourceOptions.EMPTY_FETCH_INTERVAL, "0 ms");
        conf.put(KinesisSourceOptions.RETRY_MIN_DELAY, "1 ms");
        conf.put(KinesisSourceOptions.RETRY_MAX_DELAY, "2 ms");
        conf.putAll(extra);
        return KinesisSourceOptions.of(FakeKinesis.STREAM_ARN, conf);
    }

    private void startReading(KinesisClient client, KinesisShardSplit... splits) {
        reader = new PollingShardReader(options(Map.of()), client, lag);
        reader.handleSplitsChanges(new SplitsAddition<>(List.of(splits)));
    }

    private void startReading(int... shards) {
        List<KinesisShardSplit> splits = new ArrayList<>();
        for (int shard : shards) {
            splits.add(split(shard, StartingPosition.trimHorizon()));
        }
        startReading(kinesis, splits.toArray(new KinesisShardSplit[0]));
    }

    private static KinesisShardSplit split(int shard, StartingPosition position) {
        return new KinesisShardSplit(shardId(shard), position, Set.of(), false);
    }

    /** Fetches until {@code done}; records as {@code <shard number>:<data>}. */
    private void fetchUntil(BooleanSupplier done) throws IOException {
        for (int i = 0; i < MAX_FETCHES && !done.getAsBoolean(); i++) {
            RecordsWithSplitIds<KinesisRecord> batch = reader.fetch();
            for (String split = batch.nextSplit(); split != null; split = batch.nextSplit()) {
                for (KinesisRecord r = batch.nextRecordFromSplit(); r != null; r = batch.nextRecordFromSplit()) {
                    assertEquals(split, r.shardId);
                    read.add(Integer.parseInt(r.shardId.substring(8)) + ":" + new String(r.data));
                    arrivals.add(r.arrivalMs);
                }
            }
            finished.addAll(batch.finishedSplits());
        }
        if (!done.getAsBoolean()) {
            fail("not done after " + MAX_FETCHES + " fetches; read " + read + ", finished " + finished);
        }
    }

    private void fetchUntilRead(int records) throws IOException {
        fetchUntil(() -> read.size() >= records);
    }

    private static KinesisException serviceError(int status, String code) {
        return (KinesisException) KinesisException.builder().statusCode(status)
                .awsErrorDetails(AwsErrorDetails.builder().errorCode(code).errorMessage(code).build())
                .message(code).build();
    }

    @Test
    void aClosedShardIsReadInOrderThenFinished() throws IOException {
        kinesis.openShard(shardId(0));
        for (int i = 1; i <= 5; i++) {
            kinesis.put(shardId(0), "r" + i, 1000L * i);
        }
        kinesis.split(shardId(0), shardId(1), shardId(2));
        startReading(0);
        fetchUntil(() -> finished.contains(shardId(0)));
        assertEquals(List.of("0:r1", "0:r2", "0:r3", "0:r4", "0:r5"), read);
        assertEquals(List.of(1000L, 2000L, 3000L, 4000L, 5000L), arrivals);
        assertEquals(List.of(shardId(0)), finished);
        assertTrue(lag.isEmpty(), "a finished shard leaves the lag gauge");
    }

    @Test
    void recordsOfSeveralShardsComeInArrivalOrder() throws IOException {
        kinesis.openShard(shardId(0)).openShard(shardId(1)).openShard(shardId(2));
        kinesis.put(shardId(0), "a10", 10);
        kinesis.put(shardId(1), "b20", 20);
        kinesis.put(shardId(2), "c30", 30);
        kinesis.put(shardId(0), "a40", 40);
        kinesis.put(shardId(1), "b50", 50);
        kinesis.put(shardId(2), "c60", 60);
        kinesis.put(shardId(0), "a70", 70);
        kinesis.put(shardId(0), "a80", 80);
        kinesis.put(shardId(1), "b80", 80); // same arrival: the lower shard id first
        startReading(0, 1, 2);
        fetchUntilRead(9);
        assertEquals(List.of("0:a10", "1:b20", "2:c30", "0:a40", "1:b50", "2:c60", "0:a70", "0:a80", "1:b80"), read);
    }

    @Test
    void emptyPagesOfAShardBehindHoldBackTheOthers() throws IOException {
        kinesis.openShard(shardId(0)).openShard(shardId(1));
        kinesis.put(shardId(0), "a10", 10);
        kinesis.put(shardId(0), "a30", 30);
        kinesis.put(shardId(1), "b20", 20);
        kinesis.emptyPages(shardId(1), 3);
        startReading(0, 1);
        fetchUntilRead(3);
        assertEquals(List.of("0:a10", "1:b20", "0:a30"), read);
        assertTrue(kinesis.getRecordsCalls() >= 5, "three empty pages of shard 1, then its record");
    }

    @Test
    void aShardThatIsCaughtUpHoldsNothingBack() throws IOException {
        kinesis.openShard(shardId(0)).openShard(shardId(1));
        kinesis.put(shardId(0), "a10", 10);
        kinesis.put(shardId(0), "a20", 20);
        startReading(0, 1);
        fetchUntilRead(2);
        assertEquals(List.of("0:a10", "0:a20"), read);
        assertEquals(0L, lag.get(shardId(1)));
    }

    @Test
    void throttlingBacksOffWithoutFailingOrLosingRecords() throws IOException {
        kinesis.openShard(shardId(0)).openShard(shardId(1));
        kinesis.put(shardId(0), "a10", 10);
        kinesis.put(shardId(0), "a20", 20);
        kinesis.put(shardId(1), "b5", 5);
        kinesis.failNext("getShardIterator", shardId(1),
                ProvisionedThroughputExceededException.builder().message("iterator throttled").build());
        kinesis.failNext("getRecords", shardId(1),
                ProvisionedThroughputExceededException.builder().message("throttled").build(),
                LimitExceededException.builder().message("limit").build(),
                KmsThrottlingException.builder().message("kms").build(),
                serviceError(400, "ThrottlingException"),
                serviceError(500, "InternalFailure"),
                serviceError(503, "ServiceUnavailable"));
        startReading(0, 1);
        fetchUntilRead(3);
        assertEquals(List.of("1:b5", "0:a10", "0:a20"), read, "shard 1 backed off, and its older record still "
                + "comes first");
        assertEquals(3, kinesis.iteratorRequests().size(),
                "shard 0's, shard 1's throttled one and its retry: a throttled GetRecords keeps its iterator");
    }

    @Test
    void anExpiredIteratorIsRenewedAfterTheLastRecordFetched() throws IOException {
        kinesis.openShard(shardId(0));
        List<String> sequenceNumbers = new ArrayList<>();
        for (int i = 1; i <= 5; i++) {
            sequenceNumbers.add(kinesis.put(shardId(0), "r" + i, i));
        }
        startReading(0);
        fetchUntilRead(2);
        kinesis.expireIterators();
        fetchUntilRead(5);
        assertEquals(List.of("0:r1", "0:r2", "0:r3", "0:r4", "0:r5"), read);
        List<GetShardIteratorRequest> requests = kinesis.iteratorRequests();
        assertEquals(2, requests.size());
        assertEquals(ShardIteratorType.TRIM_HORIZON, requests.get(0).shardIteratorType());
        assertEquals(ShardIteratorType.AFTER_SEQUENCE_NUMBER, requests.get(1).shardIteratorType());
        assertEquals(sequenceNumbers.get(1), requests.get(1).startingSequenceNumber());
    }

    @Test
    void anExpiredIteratorBeforeAnyRecordRestartsFromTheSplitsPosition() throws IOException {
        kinesis.openShard(shardId(0));
        kinesis.put(shardId(0), "old", 1);
        kinesis.put(shardId(0), "new", 5_000);
        kinesis.failNext("getRecords", software.amazon.awssdk.services.kinesis.model.ExpiredIteratorException
                .builder().message("expired").build());
        startReading(kinesis, split(0, StartingPosition.atTimestamp(5_000)));
        fetchUntilRead(1);
        assertEquals(List.of("0:new"), read);
        for (GetShardIteratorRequest request : kinesis.iteratorRequests()) {
            assertEquals(ShardIteratorType.AT_TIMESTAMP, request.shardIteratorType());
            assertEquals(5_000L, request.timestamp().toEpochMilli());
        }
        assertEquals(2, kinesis.iteratorRequests().size());
    }

    @Test
    void aRestoredSplitGoesOnAfterItsSequenceNumber() throws IOException {
        kinesis.openShard(shardId(0));
        kinesis.put(shardId(0), "r1", 1);
        String second = kinesis.put(shardId(0), "r2", 2);
        kinesis.put(shardId(0), "r3", 3);
        startReading(kinesis, split(0, StartingPosition.afterSequenceNumber(second)));
        fetchUntilRead(1);
        assertEquals(List.of("0:r3"), read);
    }

    @Test
    void aShardThatNoLongerExistsIsFinished() throws IOException {
        kinesis.openShard(shardId(1));
        kinesis.put(shardId(1), "b1", 1);
        startReading(0, 1); // shard 0 was trimmed away
        fetchUntil(() -> finished.contains(shardId(0)) && read.size() == 1);
        assertEquals(List.of("1:b1"), read);
    }

    @Test
    void theLagGaugeFollowsMillisBehindLatest() throws IOException {
        kinesis.openShard(shardId(0));
        for (int i = 1; i <= 3; i++) {
            kinesis.put(shardId(0), "r" + i, i);
        }
        startReading(0);
        fetchUntilRead(2);
        assertEquals(FakeKinesis.BEHIND_MS, lag.get(shardId(0)));
        fetchUntilRead(3);
        assertEquals(0L, lag.get(shardId(0)));
    }

    @Test
    void otherServiceErrorsFailTheReader() {
        kinesis.openShard(shardId(0));
        kinesis.failNext("getRecords", serviceError(403, "AccessDeniedException"));
        startReading(0);
        IOException error = assertThrows(IOException.class, () -> fetchUntilRead(1));
        assertTrue(error.getMessage().contains(shardId(0)), error.getMessage());
    }

    @Test
    void clientErrorsThatNoRetryCanFixFailTheReader() {
        kinesis.openShard(shardId(0));
        kinesis.failNext("getShardIterator", SdkClientException.create("Unable to load credentials"));
        startReading(0);
        assertThrows(IOException.class, () -> fetchUntilRead(1));
    }

    @Test
    void networkErrorsBackOffWithoutFailing() throws IOException {
        kinesis.openShard(shardId(0));
        kinesis.put(shardId(0), "r1", 1);
        kinesis.failNext("getRecords",
                SdkClientException.create("Unable to execute HTTP request: Connection reset",
                        new java.net.SocketException("Connection reset")),
                SdkClientException.create("Unable to execute HTTP request: Read timed out",
                        new java.net.SocketTimeoutException("Read timed out")));
        startReading(0);
        fetchUntilRead(1);
        assertEquals(List.of("0:r1"), read);
    }

    /** The exception the real SDK client raises when the endpoint refuses connections backs off too. */
    @Test
    void anUnreachableEndpointBacksOffWithoutFailing() throws IOException {
        int port;
        try (ServerSocket socket = new ServerSocket(0)) {
            port = socket.getLocalPort(); // closed again: connections to it are refused
        }
        Map<String, String> previous = new TreeMap<>();
        for (String key : List.of("aws.accessKeyId", "aws.secretAccessKey")) {
            previous.put(key, System.getProperty(key));
            System.setProperty(key, "test");
        }
        KinesisSourceOptions options = options(Map.of(KinesisSourceOptions.ENDPOINT, "http://127.0.0.1:" + port,
                KinesisSourceOptions.RETRY_ATTEMPTS, "1"));
        AtomicInteger failedCalls = new AtomicInteger();
        KinesisClient real = KinesisClients.create(options);
        KinesisClient counting = new KinesisClient() {
            @Override
            public GetShardIteratorResponse getShardIterator(GetShardIteratorRequest request) {
                failedCalls.incrementAndGet();
                return real.getShardIterator(request);
            }

            @Override
            public GetRecordsResponse getRecords(GetRecordsRequest request) {
                failedCalls.incrementAndGet();
                return real.getRecords(request);
            }

            @Override
            public String serviceName() {
                return SERVICE_NAME;
            }

            @Override
            public void close() {
                real.close();
            }
        };
        try {
            reader = new PollingShardReader(options, counting, lag);
            reader.handleSplitsChanges(new SplitsAddition<>(List.of(split(0, StartingPosition.trimHorizon()))));
            fetchUntil(() -> failedCalls.get() >= 3);
            assertEquals(List.of(), read);
        } finally {
            previous.forEach((key, value) -> {
                if (value == null) {
                    System.clearProperty(key);
                } else {
                    System.setProperty(key, value);
                }
            });
        }
    }

    @Test
    void aShardWithoutRecordsIsFinishedAtItsEnd() throws IOException {
        kinesis.openShard(shardId(0));
        kinesis.split(shardId(0), shardId(1), shardId(2));
        startReading(0);
        fetchUntil(() -> finished.contains(shardId(0)));
        assertEquals(List.of(), read);
        assertNull(lag.get(shardId(0)));
    }
}
