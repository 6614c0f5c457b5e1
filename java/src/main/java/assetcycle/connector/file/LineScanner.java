package assetcycle.connector.file;

import org.apache.flink.core.fs.FSDataInputStream;
import org.apache.flink.core.fs.Path;

import javax.annotation.Nullable;

import java.io.Closeable;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * The lines of a file from a byte offset on, with the byte offset after each line and its number.
 *
 * <p>Lines end at {@code \n}, {@code \r} or {@code \r\n} and are decoded as UTF-8 with malformed
 * bytes replaced, as {@code BufferedReader.readLine} (Flink's own text line format) and Python's
 * universal newlines split them.
 */
final class LineScanner implements Closeable {

    private static final int BUFFER_BYTES = 64 * 1024;

    private final FSDataInputStream stream;
    private final byte[] buffer = new byte[BUFFER_BYTES];
    private int bufferPos;
    private int bufferEnd;
    private long bufferStartOffset;
    private long lineNumber;
    private byte[] line = new byte[256];
    private int lineLength;
    private boolean eof;

    private LineScanner(FSDataInputStream stream, long offset, long linesBefore) {
        this.stream = stream;
        this.bufferStartOffset = offset;
        this.lineNumber = linesBefore;
    }

    /** {@code path} from byte {@code offset} on, the first line read being line {@code linesBefore + 1}. */
    static LineScanner open(Path path, long offset, long linesBefore) throws IOException {
        FSDataInputStream stream = path.getFileSystem().open(path);
        if (offset > 0) {
            stream.seek(offset);
        }
        return new LineScanner(stream, offset, linesBefore);
    }

    /** The number of the last line returned by {@link #next()} (1-based). */
    long lineNumber() {
        return lineNumber;
    }

    /** The byte offset just after the last line returned by {@link #next()}, its terminator included. */
    long offset() {
        return bufferStartOffset + bufferPos;
    }

    /** The next line without its terminator, or null at the end of the file. */
    @Nullable
    String next() throws IOException {
        return advance() ? text() : null;
    }

    /**
     * Moves to the next line, false at the end of the file; its bytes are then the first
     * {@link #length()} of {@link #bytes()} until the next move.
     */
    boolean advance() throws IOException {
        int length = 0;
        boolean any = false;
        while (true) {
            if (bufferPos == bufferEnd && !fill()) {
                if (!any) {
                    return false;
                }
                break;
            }
            any = true;
            int end = bufferPos;
            byte last = 0;
            while (end < bufferEnd) {
                last = buffer[end];
                if (last == '\n' || last == '\r') {
                    break;
                }
                end++;
            }
            int chunk = end - bufferPos;
            if (length + chunk > line.length) {
                line = Arrays.copyOf(line, Math.max(line.length * 2, length + chunk));
            }
            System.arraycopy(buffer, bufferPos, line, length, chunk);
            length += chunk;
            bufferPos = end;
            if (end < bufferEnd) {  // the line's terminator: \n, \r or \r\n
                bufferPos++;
                if (last == '\r' && (bufferPos < bufferEnd || fill()) && buffer[bufferPos] == '\n') {
                    bufferPos++;
                }
                break;
            }
        }
        lineLength = length;
        lineNumber++;
        return true;
    }

    /** The current line's bytes (its first {@link #length()}), valid until the next move. */
    byte[] bytes() {
        return line;
    }

    /** The current line's length in bytes. */
    int length() {
        return lineLength;
    }

    /** The current line, decoded. */
    String text() {
        return new String(line, 0, lineLength, StandardCharsets.UTF_8);
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
