package assetcycle.connector.file;

import assetcycle.connector.SourceRecords;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.file.src.FileSourceSplit;
import org.apache.flink.connector.file.src.reader.BulkFormat;
import org.apache.flink.connector.file.src.util.CheckpointedPosition;
import org.apache.flink.connector.file.src.util.MutableRecordAndPosition;
import org.apache.flink.connector.file.src.util.RecordAndPosition;
import org.apache.flink.core.fs.Path;
import org.apache.flink.types.Row;

import javax.annotation.Nullable;

import java.io.IOException;

/**
 * Text lines of a file as {@code Row(position, line)} records for Flink's {@code FileSource}, where
 * {@code position} is {@code file:<path>:<line number>} (1-based).
 *
 * <p>Lines are split and decoded as {@link LineScanner} does. Files are not split. The checkpointed
 * position of a file is
 * {@code (byte offset after the last line read, number of lines read)}: a restored reader seeks to
 * the offset and goes on counting lines from there.
 */
public final class LineNumberedTextFormat implements BulkFormat<Row, FileSourceSplit> {

    private static final long serialVersionUID = 1L;
    private static final int BATCH_LINES = 1024;

    @Override
    public Reader<Row> createReader(Configuration config, FileSourceSplit split) throws IOException {
        return open(split, split.offset(), 0L);
    }

    @Override
    public Reader<Row> restoreReader(Configuration config, FileSourceSplit split) throws IOException {
        CheckpointedPosition position = split.getReaderPosition().orElse(null);
        if (position == null || position.getOffset() == CheckpointedPosition.NO_OFFSET) {
            return createReader(config, split);
        }
        return open(split, position.getOffset(), position.getRecordsAfterOffset());
    }

    private static Reader<Row> open(FileSourceSplit split, long offset, long linesBefore) throws IOException {
        Path path = split.path();
        return new LineReader(LineScanner.open(path, offset, linesBefore), "file:" + path.getPath() + ":");
    }

    @Override
    public boolean isSplittable() {
        return false;
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return SourceRecords.TYPE;
    }

    /** Reads lines in batches and tracks the byte offset and number of every line. */
    private static final class LineReader implements BulkFormat.Reader<Row> {
        private final LineScanner lines;
        private final String prefix;

        LineReader(LineScanner lines, String prefix) {
            this.lines = lines;
            this.prefix = prefix;
        }

        @Nullable
        @Override
        public RecordIterator<Row> readBatch() throws IOException {
            Row[] rows = new Row[BATCH_LINES];
            long[] endOffsets = new long[BATCH_LINES];
            long firstLine = lines.lineNumber() + 1;
            int count = 0;
            while (count < BATCH_LINES) {
                String text = lines.next();
                if (text == null) {
                    break;
                }
                rows[count] = Row.of(prefix + lines.lineNumber(), text);
                endOffsets[count] = lines.offset();
                count++;
            }
            return count == 0 ? null : new LineBatch(rows, endOffsets, firstLine, count);
        }

        @Override
        public void close() throws IOException {
            lines.close();
        }
    }

    /** One batch of lines; the position of each is (offset after it, its line number). */
    private static final class LineBatch implements BulkFormat.RecordIterator<Row> {
        private final Row[] rows;
        private final long[] endOffsets;
        private final long firstLine;
        private final int count;
        private final MutableRecordAndPosition<Row> current = new MutableRecordAndPosition<>();
        private int index;

        LineBatch(Row[] rows, long[] endOffsets, long firstLine, int count) {
            this.rows = rows;
            this.endOffsets = endOffsets;
            this.firstLine = firstLine;
            this.count = count;
        }

        @Nullable
        @Override
        public RecordAndPosition<Row> next() {
            if (index >= count) {
                return null;
            }
            current.set(rows[index], endOffsets[index], firstLine + index);
            index++;
            return current;
        }

        @Override
        public void releaseBatch() {}
    }
}
