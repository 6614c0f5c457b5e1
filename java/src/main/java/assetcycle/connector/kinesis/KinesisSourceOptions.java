package assetcycle.connector.kinesis;

import org.apache.flink.util.TimeUtils;

import javax.annotation.Nullable;

import java.io.Serializable;
import java.text.ParseException;
import java.text.SimpleDateFormat;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TimeZone;
import java.util.TreeSet;

/**
 * The validated configuration of {@link KinesisSource}. Keys follow Flink's official
 * {@code KinesisStreamsSource} (6.x) where it has them, so that switching later is a small change:
 *
 * <ul>
 *   <li>{@code source.init.position}: LATEST (default; taken as AT_TIMESTAMP of the moment these
 *       options are made, when the job is built, so that an enumerator created afresh after a
 *       failure before the first checkpoint starts at the same time), TRIM_HORIZON or AT_TIMESTAMP with {@code source.init.timestamp} (ISO-8601, epoch
 *       seconds, or the pattern in {@code source.init.timestamp.format});
 *   <li>{@code source.reader.type}: POLLING (EFO is rejected: not implemented);
 *   <li>{@code source.shard.discovery.interval} (10 s), {@code
 *       source.shard.get-records.max-record-count} (10000), {@code
 *       source.reader.empty-records-fetch-interval} (250 ms), {@code
 *       source.reader.nonempty-records-fetch-interval} (0);
 *   <li>{@code source.shard.children-after-checkpoint} (true; not a key of the official connector): a
 *       child shard is read only once a completed checkpoint records all its parents as read to
 *       their end, so that their last records have passed every operator of the job before the
 *       child's first ones are read (a child may go to another reader, and Flink keeps no order
 *       between two subtasks). Needs checkpointing: without it nothing completes and children
 *       would never be read, so the job sets it to false then (a child is read as soon as its
 *       parents were read to their end);
 *   <li>{@code aws.region} (default: from the stream ARN), {@code aws.endpoint} (optional);
 *       credentials always come from the SDK's default provider chain;
 *   <li>{@code retry-strategy.attempts.max} (10), {@code retry-strategy.delay.min} (300 ms), {@code
 *       retry-strategy.delay.max} (10 s): the SDK's retries of each call, and the back-off of a
 *       shard whose reads stay throttled.
 * </ul>
 *
 * Unknown {@code source.*}, {@code aws.*} or {@code retry-strategy.*} keys are rejected (a typo
 * must not silently fall back to a default).
 */
public final class KinesisSourceOptions implements Serializable {

    private static final long serialVersionUID = 1L;

    /** Where a new job starts reading. */
    public enum InitialPosition {
        LATEST,
        TRIM_HORIZON,
        AT_TIMESTAMP
    }

    static final String INIT_POSITION = "source.init.position";
    static final String INIT_TIMESTAMP = "source.init.timestamp";
    static final String INIT_TIMESTAMP_FORMAT = "source.init.timestamp.format";
    static final String READER_TYPE = "source.reader.type";
    static final String EFO_CONSUMER_NAME = "source.efo.consumer.name";
    static final String EFO_LIFECYCLE = "source.efo.lifecycle";
    static final String DISCOVERY_INTERVAL = "source.shard.discovery.interval";
    static final String CHILDREN_AFTER_CHECKPOINT = "source.shard.children-after-checkpoint";
    static final String MAX_RECORDS = "source.shard.get-records.max-record-count";
    static final String EMPTY_FETCH_INTERVAL = "source.reader.empty-records-fetch-interval";
    static final String NONEMPTY_FETCH_INTERVAL = "source.reader.nonempty-records-fetch-interval";
    static final String REGION = "aws.region";
    static final String ENDPOINT = "aws.endpoint";
    static final String RETRY_ATTEMPTS = "retry-strategy.attempts.max";
    static final String RETRY_MIN_DELAY = "retry-strategy.delay.min";
    static final String RETRY_MAX_DELAY = "retry-strategy.delay.max";

    private static final List<String> KNOWN_KEYS = Arrays.asList(
            INIT_POSITION, INIT_TIMESTAMP, INIT_TIMESTAMP_FORMAT, READER_TYPE, EFO_CONSUMER_NAME,
            EFO_LIFECYCLE, DISCOVERY_INTERVAL, CHILDREN_AFTER_CHECKPOINT, MAX_RECORDS, EMPTY_FETCH_INTERVAL,
            NONEMPTY_FETCH_INTERVAL, REGION, ENDPOINT, RETRY_ATTEMPTS, RETRY_MIN_DELAY, RETRY_MAX_DELAY);

    final String streamArn;
    final String streamName;
    final String region;
    @Nullable final String endpoint;
    final InitialPosition initialPosition;
    final long initialTimestampMs;
    final Duration discoveryInterval;
    final boolean childrenAfterCheckpoint;
    final int maxRecordsPerFetch;
    final Duration emptyFetchInterval;
    final Duration nonEmptyFetchInterval;
    final int retryMaxAttempts;
    final Duration retryMinDelay;
    final Duration retryMaxDelay;

    private KinesisSourceOptions(String streamArn, Map<String, String> conf) {
        for (String key : conf.keySet()) {
            if (!KNOWN_KEYS.contains(key)) {
                throw new IllegalArgumentException(
                        "unknown Kinesis source option " + key + " (known: " + new TreeSet<>(KNOWN_KEYS) + ")");
            }
        }
        String[] arn = streamArn == null ? new String[0] : streamArn.split(":", 6);
        if (arn.length != 6 || !"arn".equals(arn[0]) || !"kinesis".equals(arn[2]) || !arn[5].startsWith("stream/")
                || arn[5].length() == "stream/".length()) {
            throw new IllegalArgumentException(
                    "stream ARN must look like arn:aws:kinesis:REGION:ACCOUNT:stream/NAME, got " + streamArn);
        }
        this.streamArn = streamArn;
        this.streamName = arn[5].substring("stream/".length());
        this.region = conf.getOrDefault(REGION, arn[3]);
        if (region.isEmpty()) {
            throw new IllegalArgumentException(REGION + " is required when the stream ARN has no region");
        }
        this.endpoint = emptyToNull(conf.get(ENDPOINT));

        String reader = conf.getOrDefault(READER_TYPE, "POLLING").trim().toUpperCase(Locale.ROOT);
        if ("EFO".equals(reader)) {
            throw new IllegalArgumentException(READER_TYPE + "=EFO is not supported by asset-cycle's Kinesis "
                    + "source (polling only): remove the key or set it to POLLING");
        }
        if (!"POLLING".equals(reader)) {
            throw new IllegalArgumentException(READER_TYPE + " must be POLLING, got " + reader);
        }

        String position = conf.getOrDefault(INIT_POSITION, "LATEST").trim().toUpperCase(Locale.ROOT);
        try {
            this.initialPosition = InitialPosition.valueOf(position);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                    INIT_POSITION + " must be one of LATEST, TRIM_HORIZON, AT_TIMESTAMP, got " + position);
        }
        if (initialPosition == InitialPosition.AT_TIMESTAMP) {
            String ts = emptyToNull(conf.get(INIT_TIMESTAMP));
            if (ts == null) {
                throw new IllegalArgumentException(INIT_TIMESTAMP + " is required when " + INIT_POSITION
                        + " is AT_TIMESTAMP");
            }
            this.initialTimestampMs = parseTimestamp(ts, emptyToNull(conf.get(INIT_TIMESTAMP_FORMAT)));
        } else if (initialPosition == InitialPosition.LATEST) {
            this.initialTimestampMs = System.currentTimeMillis();
        } else {
            this.initialTimestampMs = 0L;
        }
        this.discoveryInterval = duration(conf, DISCOVERY_INTERVAL, Duration.ofSeconds(10), Duration.ofMillis(100));
        this.childrenAfterCheckpoint = bool(conf, CHILDREN_AFTER_CHECKPOINT, true);
        this.maxRecordsPerFetch = integer(conf, MAX_RECORDS, 10_000, 1, 10_000);
        this.emptyFetchInterval = duration(conf, EMPTY_FETCH_INTERVAL, Duration.ofMillis(250), Duration.ZERO);
        this.nonEmptyFetchInterval = duration(conf, NONEMPTY_FETCH_INTERVAL, Duration.ZERO, Duration.ZERO);
        this.retryMaxAttempts = integer(conf, RETRY_ATTEMPTS, 10, 1, 100);
        this.retryMinDelay = duration(conf, RETRY_MIN_DELAY, Duration.ofMillis(300), Duration.ofMillis(1));
        this.retryMaxDelay = duration(conf, RETRY_MAX_DELAY, Duration.ofSeconds(10), retryMinDelay);
    }

    /** Validates {@code conf} (string keys and values) for the stream {@code streamArn}. */
    public static KinesisSourceOptions of(String streamArn, Map<String, String> conf) {
        return new KinesisSourceOptions(streamArn, conf);
    }

    /** The position of the shards found when the job first starts (LATEST: when these options were made). */
    StartingPosition initialStartingPosition() {
        return initialPosition == InitialPosition.TRIM_HORIZON
                ? StartingPosition.trimHorizon() : StartingPosition.atTimestamp(initialTimestampMs);
    }

    private static long parseTimestamp(String value, @Nullable String format) {
        if (format != null) {
            SimpleDateFormat parser = new SimpleDateFormat(format, Locale.ROOT);
            parser.setTimeZone(TimeZone.getTimeZone("UTC"));
            try {
                return parser.parse(value).getTime();
            } catch (ParseException e) {
                throw new IllegalArgumentException(
                        INIT_TIMESTAMP + " " + value + " does not match " + INIT_TIMESTAMP_FORMAT + " " + format);
            }
        }
        try {
            return (long) Math.floor(Double.parseDouble(value) * 1000.0);
        } catch (NumberFormatException notSeconds) {
            try {
                return OffsetDateTime.parse(value).toInstant().toEpochMilli();
            } catch (DateTimeParseException notOffset) {
                try {
                    return Instant.parse(value).toEpochMilli();
                } catch (DateTimeParseException e) {
                    throw new IllegalArgumentException(INIT_TIMESTAMP + " must be ISO-8601 (e.g. "
                            + "2024-05-01T04:00:00Z) or epoch seconds, got " + value);
                }
            }
        }
    }

    private static Duration duration(Map<String, String> conf, String key, Duration dflt, Duration min) {
        String value = emptyToNull(conf.get(key));
        if (value == null) {
            return dflt;
        }
        Duration parsed;
        try {
            parsed = TimeUtils.parseDuration(value);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(key + " must be a duration (e.g. 10 s, 250 ms), got " + value);
        }
        if (parsed.compareTo(min) < 0) {
            throw new IllegalArgumentException(key + " must be at least " + min.toMillis() + " ms, got " + value);
        }
        return parsed;
    }

    private static boolean bool(Map<String, String> conf, String key, boolean dflt) {
        String value = emptyToNull(conf.get(key));
        if (value == null) {
            return dflt;
        }
        String lower = value.toLowerCase(Locale.ROOT);
        if (!"true".equals(lower) && !"false".equals(lower)) {
            throw new IllegalArgumentException(key + " must be true or false, got " + value);
        }
        return "true".equals(lower);
    }

    private static int integer(Map<String, String> conf, String key, int dflt, int min, int max) {
        String value = emptyToNull(conf.get(key));
        if (value == null) {
            return dflt;
        }
        int parsed;
        try {
            parsed = Integer.parseInt(value);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(key + " must be an integer, got " + value);
        }
        if (parsed < min || parsed > max) {
            throw new IllegalArgumentException(key + " must be between " + min + " and " + max + ", got " + value);
        }
        return parsed;
    }

    @Nullable
    private static String emptyToNull(@Nullable String value) {
        return value == null || value.trim().isEmpty() ? null : value.trim();
    }

    @Override
    public String toString() {
        return "KinesisSourceOptions{stream=" + streamArn + ", region=" + region + ", endpoint=" + endpoint
                + ", initialPosition=" + initialPosition
                + (initialPosition == InitialPosition.TRIM_HORIZON ? "" : "(" + Instant.ofEpochMilli(initialTimestampMs) + ")")
                + ", discoveryInterval=" + discoveryInterval + ", childrenAfterCheckpoint=" + childrenAfterCheckpoint
                + ", maxRecordsPerFetch=" + maxRecordsPerFetch + "}";
    }
}
