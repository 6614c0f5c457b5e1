package assetcycle.connector.kinesis;

/** The mutable reading state of a split: the position after the last record emitted. */
final class KinesisShardSplitState {

    private final KinesisShardSplit split;
    private StartingPosition next;

    KinesisShardSplitState(KinesisShardSplit split) {
        this.split = split;
        this.next = split.startingPosition();
    }

    void emitted(String sequenceNumber) {
        next = StartingPosition.afterSequenceNumber(sequenceNumber);
    }

    KinesisShardSplit toSplit() {
        return new KinesisShardSplit(split.shardId(), next, split.parentShardIds(), false);
    }
}
