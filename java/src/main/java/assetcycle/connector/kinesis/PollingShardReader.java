package assetcycle.connector.kinesis;

import org.apache.flink.connector.base.source.reader.RecordsBySplits;
import org.apache.flink.connector.base.source.reader.RecordsWithSplitIds;
import org.apache.flink.connector.base.source.reader.splitreader.SplitReader;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsAddition;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsChange;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import software.amazon.awssdk.awscore.exception.AwsServiceException;
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
 * Reads the shards assigned to one reader with GetRecords and hands their records on merged in
 * arrival order, so that a reader of several shards sees the stream as it was written.
 *
 * <p>Why merge: the job's event time advances with the newest record it has seen. Read shard by
 * shard, a backlog (a restart after an outage, TRIM_HORIZON, a reprocess from a timestamp) would run
 * one shard hours ahead of another, and the records of the shard behind would all come too late. So
 * records are buffered per shard (one GetRecords batch at most) and released oldest
 * ApproximateArrivalTimestamp first (ties: shard id, then sequence number). A record is released only
 * when every other shard has a buffered record that is not older, or was caught up on its last poll
 * (no records, millisBehindLatest 0); a shard that is behind and has nothing buffered is polled
 * first. Reading a backlog, the order is exactly arrival order; reading live, shards are merged to
 * within the polling interval.
 *
 * <p>A shard is polled again after {@code source.reader.empty-records-fetch-interval} when a call
 * returned nothing (Kinesis allows 5 GetRecords per second and shard) and after {@code
 * source.reader.nonempty-records-fetch-interval} otherwise. Throttled calls (after the SDK's own
 * retries) back the shard off exponentially between {@code retry-strategy.delay.min} and {@code
 * .max}, with jitter, and never fail the job; so do server errors (5xx) and network errors. Other
 * errors (access denied, a deleted stream) fail the reader, and Flink restarts the job. An expired shard iterator is renewed after the last
 * record fetched. A shard is finished once GetRecords returned no next iterator (it was split or
 * merged and is read to its end) and its buffer is empty, or when it no longer exists (expired
 * beyond the retention period).
 */
final class PollingShardReader implements SplitReader<KinesisRecord, KinesisShardSplit> {

    private static final Logger LOG = LoggerFactory.getLogger(PollingShardReader.class);
    private static final long MAX_IDLE_WAIT_MS = 200L;
    private static final int MAX_RUN = 2000;

    private final KinesisSourceOptions options;
    private final KinesisClient client;
    private final Map<String, Long> millisBehindLatest;
    private final Deque<ShardCursor> shards = new ArrayDeque<>();
    private final Object wakeUpLock = new Object();
    private boolean wokenUp;

    PollingShardReader(KinesisSourceOptions options, KinesisClient client, Map<String, Long> millisBehindLatest) {
        this.options = options;
        this.client = client;
        this.millisBehindLatest = millisBehindLatest;
    }

    @Override
    public RecordsWithSplitIds<KinesisRecord> fetch() throws IOException {
        RecordsWithSplitIds<KinesisRecord> released = releaseInArrivalOrder();
        if (released != null) {
            return released;
        }
        ShardCursor cursor = nextShardToPoll();
        if (cursor == null) {
            waitForNextDueShard();
            return empty();
        }
        try {
            poll(cursor);
        } catch (ExpiredIteratorException e) {
            LOG.info("shard iterator of {} expired; renewing it", cursor.split.shardId());
            cursor.iterator = null;
        } catch (ProvisionedThroughputExceededException | LimitExceededException | KmsThrottlingException e) {
            backOff(cursor, e);
        } catch (AwsServiceException e) {
            if (!e.isThrottlingException() && e.statusCode() < 500) {
                throw new IOException("cannot read shard " + cursor.split.shardId() + " of " + options.streamArn, e);
            }
            backOff(cursor, e);
        } catch (SdkClientException e) {
            if (!e.retryable() && !isNetworkError(e)) {
                throw new IOException("cannot read shard " + cursor.split.shardId() + " of " + options.streamArn, e);
            }
            backOff(cursor, e);
        }
        RecordsWithSplitIds<KinesisRecord> finished = finishedIfDrained(cursor);
        return finished != null ? finished : empty();
    }

    /**
     * Whether a client-side error is a network failure: the SDK wraps an I/O error (connection refused
     * or reset, a read timeout) in an SdkClientException whose {@code retryable()} is false.
     */
    private static boolean isNetworkError(SdkClientException e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof IOException) {
                return true;
            }
        }
        return false;
    }

    /**
     * The next run of records of one shard that no other shard can precede, or null when the merge
     * must wait (a shard behind with nothing buffered) or nothing is buffered.
     */
    @Nullable
    private RecordsWithSplitIds<KinesisRecord> releaseInArrivalOrder() {
        ShardCursor first = null;
        for (ShardCursor cursor : shards) {
            if (cursor.buffer.isEmpty()) {
                if (!cursor.endOfShard && !cursor.caughtUp) {
                    return null;  // it may hold older records: poll it first
                }
            } else if (first == null || precedes(cursor.buffer.peekFirst(), cursor, first.buffer.peekFirst(), first)) {
                first = cursor;
            }
        }
        if (first == null) {
            return null;
        }
        ShardCursor next = null;  // the shard whose head comes right after first's records
        for (ShardCursor cursor : shards) {
            if (cursor != first && !cursor.buffer.isEmpty()
                    && (next == null || precedes(cursor.buffer.peekFirst(), cursor, next.buffer.peekFirst(), next))) {
                next = cursor;
            }
        }
        List<KinesisRecord> run = new ArrayList<>();
        while (!first.buffer.isEmpty() && run.size() < MAX_RUN
                && (next == null || precedes(first.buffer.peekFirst(), first, next.buffer.peekFirst(), next))) {
            run.add(first.buffer.pollFirst());
        }
        String shardId = first.split.shardId();
        if (first.buffer.isEmpty() && first.endOfShard) {
            finishShard(first);
            return new RecordsBySplits<>(Collections.singletonMap(shardId, run), Set.of(shardId));
        }
        return new RecordsBySplits<>(Collections.singletonMap(shardId, run), Collections.emptySet());
    }

    /** Whether record {@code a} of shard {@code sa} goes before record {@code b} of shard {@code sb}. */
    private static boolean precedes(KinesisRecord a, ShardCursor sa, KinesisRecord b, ShardCursor sb) {
        if (a.arrivalMs != b.arrivalMs) {
            return a.arrivalMs < b.arrivalMs;
        }
        return sa.split.shardId().compareTo(sb.split.shardId()) < 0;
    }

    /** A due shard with an empty buffer, one that holds the merge back first; null when none is due. */
    @Nullable
    private ShardCursor nextShardToPoll() {
        long now = System.currentTimeMillis();
        ShardCursor caughtUp = null;
        for (int i = 0; i < shards.size(); i++) {
            ShardCursor cursor = shards.pollFirst();
            shards.addLast(cursor);
            if (cursor.endOfShard || !cursor.buffer.isEmpty() || cursor.dueAtMs > now) {
                continue;
            }
            if (!cursor.caughtUp) {
                return cursor;
            }
            if (caughtUp == null) {
                caughtUp = cursor;
            }
        }
        return caughtUp;
    }

    private void poll(ShardCursor cursor) {
        String shardId = cursor.split.shardId();
        if (cursor.iterator == null) {
            try {
                cursor.iterator = shardIterator(cursor);
            } catch (ResourceNotFoundException e) {
                LOG.warn("shard {} of {} no longer exists (beyond the retention period?); treating it as finished",
                        shardId, options.streamArn);
                cursor.endOfShard = true;
                return;
            }
        }
        GetRecordsResponse response = client.getRecords(GetRecordsRequest.builder()
                .streamARN(options.streamArn)
                .shardIterator(cursor.iterator)
                .limit(options.maxRecordsPerFetch)
                .build());
        cursor.throttledCalls = 0;
        for (Record record : response.records()) {
            long arrival = record.approximateArrivalTimestamp() == null
                    ? System.currentTimeMillis() : record.approximateArrivalTimestamp().toEpochMilli();
            cursor.buffer.addLast(
                    new KinesisRecord(shardId, record.sequenceNumber(), record.data().asByteArrayUnsafe(), arrival));
            cursor.lastSequenceNumber = record.sequenceNumber();
        }
        Long behind = response.millisBehindLatest();
        if (behind != null) {
            millisBehindLatest.put(shardId, behind);
        }
        cursor.caughtUp = response.records().isEmpty() && (behind == null || behind == 0L);
        cursor.iterator = response.nextShardIterator();
        if (cursor.iterator == null) {
            cursor.endOfShard = true;
        }
        long pauseMs = (response.records().isEmpty() ? options.emptyFetchInterval : options.nonEmptyFetchInterval)
                .toMillis();
        cursor.dueAtMs = System.currentTimeMillis() + pauseMs;
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

    /** The shard as finished (no records) when it ended and its buffer is empty, else null. */
    @Nullable
    private RecordsWithSplitIds<KinesisRecord> finishedIfDrained(ShardCursor cursor) {
        if (!cursor.endOfShard || !cursor.buffer.isEmpty()) {
            return null;
        }
        finishShard(cursor);
        String shardId = cursor.split.shardId();
        return new RecordsBySplits<>(Collections.singletonMap(shardId, Collections.emptyList()), Set.of(shardId));
    }

    private void finishShard(ShardCursor cursor) {
        shards.remove(cursor);
        millisBehindLatest.remove(cursor.split.shardId());
        LOG.info("shard {} of {} read to its end", cursor.split.shardId(), options.streamArn);
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

    private void waitForNextDueShard() throws IOException {
        long now = System.currentTimeMillis();
        long waitMs = MAX_IDLE_WAIT_MS;
        for (ShardCursor cursor : shards) {
            if (!cursor.endOfShard && cursor.buffer.isEmpty()) {
                waitMs = Math.min(waitMs, Math.max(1L, cursor.dueAtMs - now));
            }
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
        final ArrayDeque<KinesisRecord> buffer = new ArrayDeque<>();
        @Nullable String iterator;
        @Nullable String lastSequenceNumber;
        boolean caughtUp;
        boolean endOfShard;
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
