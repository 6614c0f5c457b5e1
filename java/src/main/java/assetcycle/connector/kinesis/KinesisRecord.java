package assetcycle.connector.kinesis;

/** A record fetched from a shard, before it is emitted. */
final class KinesisRecord {

    final String shardId;
    final String sequenceNumber;
    final byte[] data;
    final long arrivalMs;

    KinesisRecord(String shardId, String sequenceNumber, byte[] data, long arrivalMs) {
        this.shardId = shardId;
        this.sequenceNumber = sequenceNumber;
        this.data = data;
        this.arrivalMs = arrivalMs;
    }
}
