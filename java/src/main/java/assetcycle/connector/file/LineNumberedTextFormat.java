package assetcycle.connector.file;

import assetcycle.connector.SourceRecords;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.file.src.FileSourceSplit;
import org.apache.flink.connector.file.src.reader.BulkFormat;
import org.apache.flink.connector.file.src.util.CheckpointedPosition;
import org.apache.flink.connector.file.src.util.MutableRecordAndPosition;
import org.apache.flink.connector.file.src.util.RecordAndPosition;
import org.apache.flink.core.fs.FSDataInputStream;
import org.apache.flink.core.fs.Path;
import org.apache.flink.types.Row;

import javax.annotation.Nullable;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Text lines of a file as {@code Row(position, line)} records for Flink's {@code FileSource}, where
 * {@code position} is {@code file:<path>:<line number>} (1-based).
 *
 * <p>Lines end at {@code \n}, {@code \r} or {@code \r\n} and are decoded as UTF-8 with malformed
 * bytes replaced, as {@code BufferedReader.readLine} (Flink's own text line format) and Python's
 * universal newlines split them. Files are not split. The checkpointed position of a file is
 * {@code (byte offset after the last line read, number of lines read)}: a restored reader seeks to
 * the offset and goes on counting lines from there.
 */
public final class LineNumberedTextFormat implements BulkFormat<Row, FileSourceSplit> {

    private static final long serialVersionUID = 1L;
    private static final int BATCH_LINES = 1024;
    private static final int BUFFER_BYTES = 64 * 1024;

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
        FSDataInputStream stream = path.getFileSystem().open(path);
        if (offset > 0) {
            stream.seek(offset);
        }
        return new LineReader(stream, "file:" + path.getPath() + ":", offset, linesBefore);
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
        private final FSDataInputStream stream;
        private final String prefix;
        private final byte[] buffer = new byte[BUFFER_BYTES];
        private int bufferPos;
        private int bufferEnd;
        private long bufferStartOffset;
        private long lineNumber;
        private byte[] line = new byte[256];
        private boolean eof;

        LineReader(FSDataInputStream stream, String prefix, long offset, long linesBefore) {
            this.stream = stream;
            this.prefix = prefix;
            this.bufferStartOffset = offset;
            this.lineNumber = linesBefore;
        }

        @Nullable
        @Override
        public RecordIterator<Row> readBatch() throws IOException {
            Row[] rows = new Row[BATCH_LINES];
            long[] endOffsets = new long[BATCH_LINES];
            long firstLine = lineNumber + 1;
            int count = 0;
            while (count < BATCH_LINES) {
                String text = nextLine();
                if (text == null) {
                    break;
                }
                lineNumber++;
                rows[count] = Row.of(prefix + lineNumber, text);
                endOffsets[count] = bufferStartOffset + bufferPos;
                count++;
            }
            return count == 0 ? null : new LineBatch(rows, endOffsets, firstLine, count);
        }

        /** The next line without its terminator, or null at the end of the file. */
        @Nullable
        private String nextLine() throws IOException {
            int length = 0;
            boolean any = false;
            while (true) {
                if (bufferPos == bufferEnd && !fill()) {
                    return any ? new String(line, 0, length, StandardCharsets.UTF_8) : null;
                }
                any = true;
                byte b = buffer[bufferPos++];
                if (b == '\n') {
                    break;
                }
                if (b == '\r') {
                    if (bufferPos < bufferEnd || fill()) {
                        if (buffer[bufferPos] == '\n') {
                            bufferPos++;
                        }
                    }
                    break;
                }
                if (length == line.length) {
                    line = Arrays.copyOf(line, line.length * 2);
                }
                line[length++] = b;
            }
            return new String(line, 0, length, StandardCharsets.UTF_8);
        }

        /** Refills the buffer once it is fully consumed; false at the end of the file. */
        private boolean fill() throws IOException {
            if (eof) {
                return false;
            }
            bufferStartOffset += bufferEnd;
            bufferPos = 0;
            bufferEnd = 0;
            int read;
            do {
                read = stream.read(buffer, 0, buffer.length);
            } while (read == 0);
            if (read < 0) {
                eof = true;
                return false;
            }
            bufferEnd = read;
            return true;
        }

        @Override
        public void close() throws IOException {
            stream.close();
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
