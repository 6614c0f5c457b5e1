package assetcycle.pipeline;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Splits the cycle operator's envelope rows {@code (tag, part 1, ..., part n)} into one side output
 * per tag, each carrying the envelope's part for that tag as is (its nested row type).
 *
 * <p>{@code partByTag[t]} is the envelope field that holds the row of tag {@code t}; several tags may
 * share one part (the temporary and final cycle rows). Nothing goes to the main output. A tag outside
 * the table or a null part is a programming error and fails the task.
 */
public final class EnvelopeSplitter extends ProcessFunction<Row, Row> {

    private static final long serialVersionUID = 1L;

    private final int[] partByTag;
    private final OutputTag<Row>[] tags;

    /**
     * @param envelopeType the envelope's row type (field 0: the INT tag)
     * @param partByTag for each tag, the index of the envelope field holding its row
     */
    @SuppressWarnings("unchecked")
    public EnvelopeSplitter(RowTypeInfo envelopeType, int[] partByTag) {
        this.partByTag = partByTag.clone();
        this.tags = new OutputTag[partByTag.length];
        for (int tag = 0; tag < partByTag.length; tag++) {
            int part = partByTag[tag];
            if (part < 1 || part >= envelopeType.getArity()) {
                throw new IllegalArgumentException("tag " + tag + ": no envelope field " + part);
            }
            TypeInformation<Row> type = (TypeInformation<Row>) (TypeInformation<?>) envelopeType.getTypeAt(part);
            this.tags[tag] = new OutputTag<>("envelope-" + tag, type);
        }
    }

    /** The side output of one tag's rows. */
    public OutputTag<Row> outputTag(int tag) {
        return tags[tag];
    }

    @Override
    public void processElement(Row envelope, Context ctx, Collector<Row> out) {
        Integer tag = (Integer) envelope.getField(0);
        if (tag == null || tag < 0 || tag >= tags.length) {
            throw new IllegalStateException("envelope with unknown tag " + tag);
        }
        Row part = (Row) envelope.getField(partByTag[tag]);
        if (part == null) {
            throw new IllegalStateException("envelope with tag " + tag + " has no row in field " + partByTag[tag]);
        }
        ctx.output(tags[tag], part);
    }
}
