package assetcycle.connector.kinesis;

import software.amazon.awssdk.core.SdkBytes;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.ExpiredIteratorException;
import software.amazon.awssdk.services.kinesis.model.GetRecordsRequest;
import software.amazon.awssdk.services.kinesis.model.GetRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.GetShardIteratorRequest;
import software.amazon.awssdk.services.kinesis.model.GetShardIteratorResponse;
import software.amazon.awssdk.services.kinesis.model.InvalidArgumentException;
import software.amazon.awssdk.services.kinesis.model.ListShardsRequest;
import software.amazon.awssdk.services.kinesis.model.ListShardsResponse;
import software.amazon.awssdk.services.kinesis.model.Record;
import software.amazon.awssdk.services.kinesis.model.ResourceNotFoundException;
import software.amazon.awssdk.services.kinesis.model.Shard;
import software.amazon.awssdk.services.kinesis.model.ShardFilter;
import software.amazon.awssdk.services.kinesis.model.ShardFilterType;

import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * An in-memory Kinesis stream behind the SDK's client interface: shards with parents, records with
 * arrival times, closing (split, merge), ListShards with its filters and pages, shard iterators
 * that can be expired, scripted failures and empty pages. Thread-safe (the enumerator's worker and
 * the readers' fetchers call it concurrently).
 */
final class FakeKinesis implements KinesisClient {

    static final String STREAM_ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/trucks";
    /** Lag reported by a page that stops before the shard's newest record. */
    static final long BEHIND_MS = 1_000L;

    private final TreeMap<String, FakeShard> shards = new TreeMap<>();
    private final Map<String, Deque<RuntimeException>> failures = new HashMap<>();
    private final Map<String, Integer> emptyPages = new HashMap<>();
    private final Map<String, Long> reportedLag = new HashMap<>();
    private final List<ListShardsRequest> listShardsRequests = new ArrayList<>();
    private final List<GetShardIteratorRequest> iteratorRequests = new ArrayList<>();
    private final Map<String, List<String>> pendingPages = new HashMap<>();
    private int listShardsPageSize = 1000;
    private long sequence;
    private int iteratorGeneration;
    private int expiredBeforeGeneration;
    private int getRecordsCalls;

    /** Shard id {@code n} in Kinesis' form (ids sort in creation order). */
    static String shardId(int n) {
        return String.format("shardId-%012d", n);
    }

    /** Adds an open shard with the given parents (null: none). */
    synchronized FakeKinesis openShard(String id, String parent, String adjacentParent) {
        shards.put(id, new FakeShard(id, parent, adjacentParent));
        return this;
    }

    synchronized FakeKinesis openShard(String id) {
        return openShard(id, null, null);
    }

    /** Appends a record to an open shard; returns its sequence number. */
    synchronized String put(String shardId, String data, long arrivalMs) {
        FakeShard shard = shards.get(shardId);
        if (shard.closed) {
            throw new IllegalStateException(shardId + " is closed");
        }
        String seq = String.format("%020d", ++sequence);
        shard.records.add(Record.builder()
                .sequenceNumber(seq)
                .data(SdkBytes.fromString(data, StandardCharsets.UTF_8))
                .approximateArrivalTimestamp(Instant.ofEpochMilli(arrivalMs))
                .partitionKey("k")
                .build());
        return seq;
    }

    /** Closes a shard: its readers reach its end after its last record. */
    synchronized void close(String shardId) {
        shards.get(shardId).closed = true;
    }

    /** How many records of the shard come up to and including {@code sequenceNumber}. */
    synchronized int recordsUpTo(String shardId, String sequenceNumber) {
        return shards.get(shardId).indexOf(sequenceNumber) + 1;
    }

    /** Every page of the shard reports this lag (instead of 0 at its newest record). */
    synchronized void reportBehind(String shardId, long millis) {
        reportedLag.put(shardId, millis);
    }

    /** Splits {@code parent} into two new shards. */
    synchronized void split(String parent, String child1, String child2) {
        shards.get(parent).closed = true;
        openShard(child1, parent, null);
        openShard(child2, parent, null);
    }

    /** Merges {@code parent} and its neighbour {@code adjacent} into a new shard. */
    synchronized void merge(String parent, String adjacent, String child) {
        shards.get(parent).closed = true;
        shards.get(adjacent).closed = true;
        openShard(child, parent, adjacent);
    }

    /** Removes a shard altogether (trimmed after the retention period). */
    synchronized void delete(String shardId) {
        shards.remove(shardId);
    }

    /** The next calls of {@code operation} (listShards, getShardIterator, getRecords) throw these, in order. */
    synchronized void failNext(String operation, RuntimeException... errors) {
        Deque<RuntimeException> queue = failures.computeIfAbsent(operation, k -> new ArrayDeque<>());
        for (RuntimeException error : errors) {
            queue.addLast(error);
        }
    }

    /** The next calls of {@code operation} on one shard (getShardIterator, getRecords) throw these. */
    synchronized void failNext(String operation, String shardId, RuntimeException... errors) {
        failNext(operation + ":" + shardId, errors);
    }

    /** The next {@code pages} GetRecords calls on the shard return no records, behind by {@link #BEHIND_MS}. */
    synchronized void emptyPages(String shardId, int pages) {
        emptyPages.merge(shardId, pages, Integer::sum);
    }

    /** Every shard iterator handed out so far expires. */
    synchronized void expireIterators() {
        expiredBeforeGeneration = iteratorGeneration + 1;
    }

    synchronized void listShardsPageSize(int size) {
        listShardsPageSize = size;
    }

    synchronized List<ListShardsRequest> listShardsRequests() {
        return new ArrayList<>(listShardsRequests);
    }

    synchronized List<GetShardIteratorRequest> iteratorRequests() {
        return new ArrayList<>(iteratorRequests);
    }

    synchronized int getRecordsCalls() {
        return getRecordsCalls;
    }

    @Override
    public synchronized ListShardsResponse listShards(ListShardsRequest request) {
        listShardsRequests.add(request);
        throwScripted("listShards");
        List<String> ids;
        if (request.nextToken() != null) {
            ids = pendingPages.remove(request.nextToken());
            if (ids == null) {
                throw InvalidArgumentException.builder().message("unknown token " + request.nextToken()).build();
            }
        } else {
            if (!STREAM_ARN.equals(request.streamARN())) {
                throw ResourceNotFoundException.builder().message("no stream " + request.streamARN()).build();
            }
            ids = matching(request.shardFilter());
        }
        List<String> page = ids.subList(0, Math.min(listShardsPageSize, ids.size()));
        String token = null;
        if (page.size() < ids.size()) {
            token = "token-" + listShardsRequests.size();
            pendingPages.put(token, new ArrayList<>(ids.subList(page.size(), ids.size())));
        }
        List<Shard> out = new ArrayList<>();
        for (String id : page) {
            FakeShard shard = shards.get(id);
            out.add(Shard.builder().shardId(id).parentShardId(shard.parent).adjacentParentShardId(shard.adjacentParent)
                    .build());
        }
        return ListShardsResponse.builder().shards(out).nextToken(token).build();
    }

    /** FROM_TRIM_HORIZON: every shard; FROM_TIMESTAMP: the open ones; AFTER_SHARD_ID: those with a greater id. */
    private List<String> matching(ShardFilter filter) {
        List<String> ids = new ArrayList<>();
        for (FakeShard shard : shards.values()) {
            boolean match = filter == null || filter.type() == ShardFilterType.FROM_TRIM_HORIZON
                    || (filter.type() == ShardFilterType.FROM_TIMESTAMP && !shard.closed)
                    || (filter.type() == ShardFilterType.AFTER_SHARD_ID && shard.id.compareTo(filter.shardId()) > 0);
            if (match) {
                ids.add(shard.id);
            }
        }
        return ids;
    }

    @Override
    public synchronized GetShardIteratorResponse getShardIterator(GetShardIteratorRequest request) {
        iteratorRequests.add(request);
        throwScripted("getShardIterator");
        throwScripted("getShardIterator:" + request.shardId());
        FakeShard shard = shards.get(request.shardId());
        if (shard == null || !STREAM_ARN.equals(request.streamARN())) {
            throw ResourceNotFoundException.builder().message("no shard " + request.shardId()).build();
        }
        int index;
        switch (request.shardIteratorType()) {
            case TRIM_HORIZON:
                index = 0;
                break;
            case AT_TIMESTAMP:
                index = 0;
                while (index < shard.records.size()
                        && shard.records.get(index).approximateArrivalTimestamp().isBefore(request.timestamp())) {
                    index++;
                }
                break;
            case AFTER_SEQUENCE_NUMBER:
                index = shard.indexOf(request.startingSequenceNumber()) + 1;
                break;
            default:
                throw new UnsupportedOperationException(request.shardIteratorTypeAsString());
        }
        return GetShardIteratorResponse.builder().shardIterator(iterator(shard.id, index)).build();
    }

    @Override
    public synchronized GetRecordsResponse getRecords(GetRecordsRequest request) {
        getRecordsCalls++;
        throwScripted("getRecords");
        String[] parts = request.shardIterator().split("\\|");
        throwScripted("getRecords:" + parts[0]);
        FakeShard shard = shards.get(parts[0]);
        int index = Integer.parseInt(parts[1]);
        if (Integer.parseInt(parts[2]) < expiredBeforeGeneration) {
            throw ExpiredIteratorException.builder().message("iterator expired").build();
        }
        if (shard == null) {
            throw ResourceNotFoundException.builder().message("no shard " + parts[0]).build();
        }
        int empty = emptyPages.getOrDefault(shard.id, 0);
        if (empty > 0) {
            emptyPages.put(shard.id, empty - 1);
            return GetRecordsResponse.builder().records(List.of()).nextShardIterator(iterator(shard.id, index))
                    .millisBehindLatest(BEHIND_MS).build();
        }
        int end = Math.min(shard.records.size(), index + request.limit());
        boolean atEnd = end == shard.records.size();
        return GetRecordsResponse.builder()
                .records(new ArrayList<>(shard.records.subList(index, end)))
                .nextShardIterator(atEnd && shard.closed ? null : iterator(shard.id, end))
                .millisBehindLatest(reportedLag.getOrDefault(shard.id, atEnd ? 0L : BEHIND_MS))
                .build();
    }

    private String iterator(String shardId, int index) {
        return shardId + "|" + index + "|" + (++iteratorGeneration);
    }

    private void throwScripted(String operation) {
        Deque<RuntimeException> queue = failures.get(operation);
        if (queue != null && !queue.isEmpty()) {
            throw queue.pollFirst();
        }
    }

    @Override
    public String serviceName() {
        return SERVICE_NAME;
    }

    @Override
    public void close() {}

    private static final class FakeShard {
        final String id;
        final String parent;
        final String adjacentParent;
        final List<Record> records = new ArrayList<>();
        boolean closed;

        FakeShard(String id, String parent, String adjacentParent) {
            this.id = id;
            this.parent = parent;
            this.adjacentParent = adjacentParent;
        }

        int indexOf(String sequenceNumber) {
            for (int i = 0; i < records.size(); i++) {
                if (records.get(i).sequenceNumber().equals(sequenceNumber)) {
                    return i;
                }
            }
            throw InvalidArgumentException.builder().message("no sequence number " + sequenceNumber + " in " + id)
                    .build();
        }
    }
}
