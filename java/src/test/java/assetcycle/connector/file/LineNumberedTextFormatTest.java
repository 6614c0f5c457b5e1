package assetcycle.connector.file;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.fail;

import assetcycle.connector.RecordingOutput;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.BooleanSupplier;

import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.connector.file.src.FileSource;
import org.apache.flink.connector.file.src.FileSourceSplit;
import org.apache.flink.connector.testutils.source.reader.TestingReaderContext;
import org.apache.flink.core.fs.Path;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.types.Row;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The format inside Flink's FileSource reader: each file (split) numbers its lines from 1, lines end
 * as Python's universal newlines end them, and a reader restored from any checkpoint goes on with
 * the next line and its number, across the format's 64 KiB buffer and 1024-line batches.
 */
class LineNumberedTextFormatTest {

    private static final int MAX_POLLS = 100_000;

    @TempDir
    java.nio.file.Path dir;

    private final List<SourceReader<Row, FileSourceSplit>> readers = new ArrayList<>();

    @AfterEach
    void closeReaders() throws Exception {
        for (SourceReader<Row, FileSourceSplit> reader : readers) {
            reader.close();
        }
    }

    /** Emitted rows as {@code <position>=<line>}. */
    private static List<String> rows(RecordingOutput out) {
        List<String> rows = new ArrayList<>(out.data.size());
        for (int i = 0; i < out.data.size(); i++) {
            rows.add(out.positions.get(i) + "=" + out.data.get(i));
        }
        return rows;
    }

    private FileSourceSplit file(String name, byte[] content) throws IOException {
        java.nio.file.Path path = dir.resolve(name);
        Files.write(path, content);
        return new FileSourceSplit(name, new Path(path.toUri()), 0, content.length, 0, content.length);
    }

    private FileSourceSplit file(String name, String content) throws IOException {
        return file(name, content.getBytes(StandardCharsets.UTF_8));
    }

    private SourceReader<Row, FileSourceSplit> reader(List<FileSourceSplit> splits) {
        SourceReader<Row, FileSourceSplit> reader = FileSource
                .forBulkFileFormat(new LineNumberedTextFormat(), new Path(dir.toUri()))
                .build()
                .createReader(new TestingReaderContext());
        readers.add(reader);
        reader.start();
        reader.addSplits(splits);
        return reader;
    }

    private static void pollUntil(SourceReader<Row, FileSourceSplit> reader, RecordingOutput out, BooleanSupplier done)
            throws Exception {
        for (int i = 0; i < MAX_POLLS && !done.getAsBoolean(); i++) {
            if (reader.pollNext(out) == InputStatus.NOTHING_AVAILABLE) {
                try {
                    reader.isAvailable().get(100, TimeUnit.MILLISECONDS);
                } catch (TimeoutException e) {
                    // nothing yet: look again
                }
            }
        }
        if (!done.getAsBoolean()) {
            fail("not done after " + MAX_POLLS + " polls; read " + out.data.size() + " lines");
        }
    }

    private List<String> readAll(List<FileSourceSplit> splits, int lines) throws Exception {
        RecordingOutput out = new RecordingOutput();
        pollUntil(reader(splits), out, () -> out.data.size() >= lines);
        return rows(out);
    }

    private String position(String name, int line) {
        return "file:" + new Path(dir.resolve(name).toUri()).getPath() + ":" + line;
    }

    private List<String> expected(String name, List<String> lines) {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < lines.size(); i++) {
            out.add(position(name, i + 1) + "=" + lines.get(i));
        }
        return out;
    }

    @Test
    void eachFileNumbersItsLinesFromOne() throws Exception {
        List<String> read = readAll(List.of(file("one.jsonl", "a\nb\nc\n"), file("two.jsonl", "x\ny")), 5);
        List<String> expected = new ArrayList<>(expected("one.jsonl", List.of("a", "b", "c")));
        expected.addAll(expected("two.jsonl", List.of("x", "y")));
        assertEquals(expected, read);
    }

    @Test
    void linesEndAsUniversalNewlinesEndThem() throws Exception {
        byte[] invalidUtf8 = {'o', 'k', (byte) 0xff, '\n'};
        String text = "lf\ncrlf\r\ncr\rempty next\n\n\u00e9t\u00e9\nlast without end";
        ByteArrayOutputStream content = new ByteArrayOutputStream();
        content.write(text.getBytes(StandardCharsets.UTF_8));
        content.write('\n');
        content.write(invalidUtf8);
        content.write("cr at the end\r".getBytes(StandardCharsets.UTF_8));
        List<String> read = readAll(List.of(file("mixed.txt", content.toByteArray())), 9);
        assertEquals(expected("mixed.txt", List.of("lf", "crlf", "cr", "empty next", "", "\u00e9t\u00e9",
                "last without end", "ok\ufffd", "cr at the end")), read);
    }

    /** 3,000 lines of varying length; one CRLF straddles the first 64 KiB buffer boundary. */
    private static List<String> longFile(StringBuilder content) {
        List<String> lines = new ArrayList<>();
        for (int i = 1; i <= 3_000; i++) {
            String line = "line " + i + " " + "x".repeat(i % 97);
            if (content.length() + line.length() + 2 > 65_535 && content.length() < 65_536) {
                line = "y".repeat(65_535 - content.length()); // its \r is byte 65,535, its \n byte 65,536
            }
            lines.add(line);
            content.append(line).append(i % 2 == 0 ? "\r\n" : "\n");
        }
        return lines;
    }

    @Test
    void lineNumbersHoldAcrossBuffersAndBatches() throws Exception {
        StringBuilder content = new StringBuilder();
        List<String> lines = longFile(content);
        assertEquals('\r', content.charAt(65_535));
        List<String> read = readAll(List.of(file("long.txt", content.toString())), lines.size());
        assertEquals(expected("long.txt", lines), read);
    }

    @Test
    void aRestoredReaderGoesOnWithTheNextLineAndItsNumber() throws Exception {
        StringBuilder content = new StringBuilder();
        List<String> lines = longFile(content);
        FileSourceSplit split = file("long.txt", content.toString());
        List<String> expected = expected("long.txt", lines);
        for (int checkpointAfter : new int[] {1, 1023, 1024, 1025, 2_000, 2_999}) {
            RecordingOutput before = new RecordingOutput();
            SourceReader<Row, FileSourceSplit> reader = reader(List.of(split));
            pollUntil(reader, before, () -> before.data.size() == checkpointAfter);
            List<FileSourceSplit> checkpoint = reader.snapshotState(checkpointAfter);
            assertEquals(1, checkpoint.size());
            assertFalse(checkpoint.get(0).getReaderPosition().isEmpty(), "a position after " + checkpointAfter);

            RecordingOutput after = new RecordingOutput();
            SourceReader<Row, FileSourceSplit> restored = reader(checkpoint);
            pollUntil(restored, after, () -> before.data.size() + after.data.size() == lines.size());
            List<String> all = rows(before);
            all.addAll(rows(after));
            assertEquals(expected, all, "checkpoint after line " + checkpointAfter);
        }
    }
}
