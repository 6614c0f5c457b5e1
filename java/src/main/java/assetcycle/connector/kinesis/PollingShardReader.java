package assetcycle.connector.kinesis;

import org.apache.flink.connector.base.source.reader.RecordsBySplits;
import org.apache.flink.connector.base.source.reader.RecordsWithSplitIds;
import org.apache.flink.connector.base.source.reader.splitreader.SplitReader;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsAddition;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsChange;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import software.amazon.awssdk.core.exception.SdkClientException;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.ExpiredIteratorException;
import software.amazon.awssdk.services.kinesis.model.GetRecordsRequest;
import software.amazon.awssdk.services.kinesis.model.GetRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.GetShardIteratorRequest;
import software.amazon.awssdk.services.kinesis.model.KmsThrottlingException;
import software.amazon.awssdk.services.kinesis.model.LimitExceededException;
import software.amazon.awssdk.services.kinesis.model.ProvisionedThroughputExceededException;
import software.amazon.awssdk.services.kinesis.model.Record;
import software.amazon.awssdk.services.kinesis.model.ResourceNotFoundException;

import javax.annotation.Nullable;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Deque;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Reads the shards assigned to one reader with GetRecords, one call per {@link #fetch}, taking the
 * shards in turn.
 *
 * <p>A shard is polled again after {@code source.reader.empty-records-fetch-interval} when a call
 * returned nothing (Kinesis allows 5 GetRecords per second and shard) and after {@code
 * source.reader.nonempty-records-fetch-interval} otherwise. Throttled calls (after the SDK's own
 * retries) back the shard off exponentially between {@code retry-strategy.delay.min} and {@code
 * .max}, with jitter, and never fail the job. An expired shard iterator is renewed after the last
 * record fetched. A shard is finished when GetRecords returns no next iterator (it was split or
 * merged and is read to its end) or when it no longer exists (expired beyond the retention period).
 */
final class PollingShardReader implements SplitReader<KinesisRecord, KinesisShardSplit> {

    private static final Logger LOG = LoggerFactory.getLogger(PollingShardReader.class);
    private static final long MAX_IDLE_WAIT_MS = 200L;

    private final KinesisSourceOptions options;
    private final KinesisClient client;
    private final Map<String, Long> millisBehindLatest;
    private final Deque<ShardCursor> shards = new ArrayDeque<>();
    private final Object wakeUpLock = new Object();
    private boolean wokenUp;

    PollingShardReader(KinesisSourceOptions options, Map<String, Long> millisBehindLatest) {
        this.options = options;
        this.client = KinesisClients.create(options);
        this.millisBehindLatest = millisBehindLatest;
    }

    @Override
    public RecordsWithSplitIds<KinesisRecord> fetch() throws IOException {
        ShardCursor cursor = nextDueShard();
        if (cursor == null) {
            waitForNextDueShard();
            return empty();
        }
        try {
            return read(cursor);
        } catch (ExpiredIteratorException e) {
            LOG.info("shard iterator of {} expired; renewing it", cursor.split.shardId());
            cursor.iterator = null;
            return empty();
        } catch (ProvisionedThroughputExceededException | LimitExceededException | KmsThrottlingException e) {
            backOff(cursor, e);
            return empty();
        } catch (SdkClientException e) {
            if (!e.retryable()) {
                throw new IOException("cannot read shard " + cursor.split.shardId() + " of " + options.streamArn, e);
            }
            backOff(cursor, e);
            return empty();
        }
    }

    private RecordsWithSplitIds<KinesisRecord> read(ShardCursor cursor) {
        String shardId = cursor.split.shardId();
        if (cursor.iterator == null) {
            try {
                cursor.iterator = shardIterator(cursor);
            } catch (ResourceNotFoundException e) {
                LOG.warn("shard {} of {} no longer exists (beyond the retention period?); treating it as finished",
                        shardId, options.streamArn);
                return finish(cursor, Collections.emptyList());
            }
        }
        GetRecordsResponse response = client.getRecords(GetRecordsRequest.builder()
                .streamARN(options.streamArn)
                .shardIterator(cursor.iterator)
                .limit(options.maxRecordsPerFetch)
                .build());
        cursor.throttledCalls = 0;
        List<KinesisRecord> records = new ArrayList<>(response.records().size());
        for (Record record : response.records()) {
            long arrival = record.approximateArrivalTimestamp() == null
                    ? System.currentTimeMillis() : record.approximateArrivalTimestamp().toEpochMilli();
            records.add(new KinesisRecord(shardId, record.sequenceNumber(), record.data().asByteArrayUnsafe(), arrival));
        }
        if (!records.isEmpty()) {
            cursor.lastSequenceNumber = records.get(records.size() - 1).sequenceNumber;
        }
        if (response.millisBehindLatest() != null) {
            millisBehindLatest.put(shardId, response.millisBehindLatest());
        }
        cursor.iterator = response.nextShardIterator();
        if (cursor.iterator == null) {
            return finish(cursor, records);
        }
        long pauseMs = (records.isEmpty() ? options.emptyFetchInterval : options.nonEmptyFetchInterval).toMillis();
        cursor.dueAtMs = System.currentTimeMillis() + pauseMs;
        return new RecordsBySplits<>(Collections.singletonMap(shardId, records), Collections.emptySet());
    }

    private String shardIterator(ShardCursor cursor) {
        StartingPosition position = cursor.lastSequenceNumber != null
                ? StartingPosition.afterSequenceNumber(cursor.lastSequenceNumber)
                : cursor.split.startingPosition();
        GetShardIteratorRequest.Builder request = GetShardIteratorRequest.builder()
                .streamARN(options.streamArn)
                .shardId(cursor.split.shardId());
        return client.getShardIterator(position.applyTo(request).build()).shardIterator();
    }

    private RecordsWithSplitIds<KinesisRecord> finish(ShardCursor cursor, List<KinesisRecord> records) {
        String shardId = cursor.split.shardId();
        shards.remove(cursor);
        millisBehindLatest.remove(shardId);
        LOG.info("shard {} of {} read to its end", shardId, options.streamArn);
        return new RecordsBySplits<>(Collections.singletonMap(shardId, records), Set.of(shardId));
    }

    private void backOff(ShardCursor cursor, Exception cause) {
        cursor.throttledCalls++;
        long min = options.retryMinDelay.toMillis();
        long max = options.retryMaxDelay.toMillis();
        long delay = Math.min(max, min << Math.min(20, cursor.throttledCalls - 1));
        delay = delay / 2 + ThreadLocalRandom.current().nextLong(delay / 2 + 1);
        cursor.dueAtMs = System.currentTimeMillis() + delay;
        if (cursor.throttledCalls == 1 || cursor.throttledCalls % 10 == 0) {
            LOG.warn("reading shard {} of {} failed {} time(s) in a row ({}); next try in {} ms",
                    cursor.split.shardId(), options.streamArn, cursor.throttledCalls, cause.toString(), delay);
        }
    }

    /** The next shard in turn whose pause is over (it goes to the back of the queue), or null. */
    @Nullable
    private ShardCursor nextDueShard() {
        long now = System.currentTimeMillis();
        for (int i = 0; i < shards.size(); i++) {
            ShardCursor cursor = shards.pollFirst();
            shards.addLast(cursor);
            if (cursor.dueAtMs <= now) {
                return cursor;
            }
        }
        return null;
    }

    private void waitForNextDueShard() throws IOException {
        long now = System.currentTimeMillis();
        long waitMs = MAX_IDLE_WAIT_MS;
        for (ShardCursor cursor : shards) {
            waitMs = Math.min(waitMs, Math.max(1L, cursor.dueAtMs - now));
        }
        synchronized (wakeUpLock) {
            if (!wokenUp) {
                try {
                    wakeUpLock.wait(waitMs);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while waiting to poll Kinesis", e);
                }
            }
            wokenUp = false;
        }
    }

    private static RecordsWithSplitIds<KinesisRecord> empty() {
        return new RecordsBySplits<>(Collections.emptyMap(), Collections.emptySet());
    }

    @Override
    public void handleSplitsChanges(SplitsChange<KinesisShardSplit> splitsChanges) {
        if (!(splitsChanges instanceof SplitsAddition)) {
            throw new UnsupportedOperationException("unsupported splits change " + splitsChanges);
        }
        for (KinesisShardSplit split : splitsChanges.splits()) {
            shards.addLast(new ShardCursor(split));
        }
    }

    @Override
    public void wakeUp() {
        synchronized (wakeUpLock) {
            wokenUp = true;
            wakeUpLock.notifyAll();
        }
    }

    @Override
    public void close() {
        client.close();
    }

    /** Reading progress of one shard (fetcher thread only). */
    private static final class ShardCursor {
        final KinesisShardSplit split;
        @Nullable String iterator;
        @Nullable String lastSequenceNumber;
        long dueAtMs;
        int throttledCalls;

        ShardCursor(KinesisShardSplit split) {
            this.split = split;
        }
    }

    /** A fresh map for {@link #millisBehindLatest} shared with the reader's gauge. */
    static Map<String, Long> newLagMap() {
        return new ConcurrentHashMap<>();
    }
}
