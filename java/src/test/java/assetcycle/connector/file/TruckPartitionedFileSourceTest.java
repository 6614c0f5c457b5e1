package assetcycle.connector.file;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import assetcycle.connector.RecordingOutput;
import assetcycle.pipeline.TruckPartitioner;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.flink.api.connector.source.ReaderInfo;
import org.apache.flink.api.connector.source.SplitsAssignment;
import org.apache.flink.api.connector.source.mocks.MockSplitEnumeratorContext;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.testutils.source.reader.TestingReaderContext;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.metrics.testutils.MetricListener;
import org.apache.flink.runtime.metrics.groups.InternalSourceReaderMetricGroup;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Every subtask reads the file and keeps its own trucks' lines: once each, in order, across restores. */
class TruckPartitionedFileSourceTest {

    private static final int MAX_PARALLELISM = 128;
    private static final int TRUCKS = 40;
    private static final int LINES = 5000;

    @TempDir Path dir;

    /** Lines of TRUCKS trucks interleaved, with lines no truck owns (malformed, no asset_guid, empty). */
    private Path telemetry() throws IOException {
        StringBuilder text = new StringBuilder();
        for (int i = 1; i <= LINES; i++) {
            if (i % 997 == 0) {
                text.append("not json").append(i);
            } else if (i % 1499 == 0) {
                text.append("{\"site_guid\": \"S\", \"n\": ").append(i).append('}');
            } else if (i % 2003 == 0) {
                text.append("");
            } else {
                text.append("{\"asset_guid\": \"HT-").append(i % TRUCKS).append("\", \"n\": ").append(i).append('}');
            }
            text.append(i % 7 == 0 ? "\r\n" : "\n");
        }
        Path file = dir.resolve("telemetry.jsonl");
        Files.write(file, text.toString().getBytes(StandardCharsets.UTF_8));
        return file;
    }

    private static List<String> lines(Path file) throws IOException {
        return Files.readAllLines(file, StandardCharsets.UTF_8);
    }

    /** The positions ("file:<path>:<n>") of the lines of ``partition`` of ``partitions``, in file order. */
    private static List<String> positionsOf(Path file, int partition, int partitions) throws IOException {
        List<String> out = new ArrayList<>();
        List<String> all = lines(file);
        for (int i = 0; i < all.size(); i++) {
            if (partitionOf(all.get(i), partitions) == partition) {
                out.add(position(file, i + 1));
            }
        }
        return out;
    }

    private static int partitionOf(String line, int partitions) {
        byte[] utf8 = line.getBytes(StandardCharsets.UTF_8);
        return TruckPartitioner.subtaskOfRecord(utf8, utf8.length, MAX_PARALLELISM, partitions);
    }

    private static String position(Path file, long line) {
        return "file:" + file + ":" + line;
    }

    private static TruckLinesReader reader() {
        TestingReaderContext context = new TestingReaderContext(
                new Configuration(), InternalSourceReaderMetricGroup.mock(new MetricListener().getMetricGroup()));
        return new TruckLinesReader(context, MAX_PARALLELISM);
    }

    private static TruckLinesSplit split(Path file, int partition, int partitions) {
        return new TruckLinesSplit(file.toString(), partition, partitions, 0L, 0L);
    }

    /** Polls until ``records`` more were emitted or the input ended; the status of the last poll. */
    private static InputStatus poll(TruckLinesReader reader, RecordingOutput out, int records) throws IOException {
        long target = (long) out.positions.size() + records;
        InputStatus status = InputStatus.MORE_AVAILABLE;
        while (status == InputStatus.MORE_AVAILABLE && out.positions.size() < target) {
            status = reader.pollNext(out);
        }
        return status;
    }

    @Test
    void eachReaderEmitsTheLinesOfItsTrucksInFileOrderAndTogetherEveryLineOnce() throws IOException {
        Path file = telemetry();
        List<String> everything = new ArrayList<>();
        for (int partition = 0; partition < 3; partition++) {
            TruckLinesReader reader = reader();
            reader.addSplits(List.of(split(file, partition, 3)));
            reader.notifyNoMoreSplits();
            RecordingOutput out = new RecordingOutput();
            assertEquals(InputStatus.END_OF_INPUT, poll(reader, out, Integer.MAX_VALUE));
            assertEquals(positionsOf(file, partition, 3), out.positions);
            assertTrue(out.positions.size() > LINES / 10, "partition " + partition + ": " + out.positions.size());
            List<String> all = lines(file);
            for (int i = 0; i < out.positions.size(); i++) {
                String position = out.positions.get(i);
                int line = Integer.parseInt(position.substring(position.lastIndexOf(':') + 1));
                assertEquals(all.get(line - 1), out.data.get(i));
            }
            assertTrue(reader.snapshotState(1L).isEmpty(), "a partition read to its end leaves the state");
            everything.addAll(out.positions);
            reader.close();
        }
        assertEquals(LINES, everything.size());
        assertEquals(LINES, everything.stream().distinct().count());
    }

    @Test
    void oneReaderOfOnePartitionEmitsEveryLine() throws IOException {
        Path file = telemetry();
        TruckLinesReader reader = reader();
        reader.addSplits(List.of(split(file, 0, 1)));
        reader.notifyNoMoreSplits();
        RecordingOutput out = new RecordingOutput();
        assertEquals(InputStatus.END_OF_INPUT, poll(reader, out, Integer.MAX_VALUE));
        assertEquals(lines(file), out.data);
        assertEquals(position(file, LINES), out.positions.get(LINES - 1));
    }

    /** Two readers checkpointed mid-file, restored as ``readers`` readers (the splits dealt round robin). */
    private void restoredAt(int readers) throws IOException {
        Path file = telemetry();
        List<TruckLinesSplit> checkpoint = new ArrayList<>();
        List<List<String>> before = new ArrayList<>();
        for (int partition = 0; partition < 2; partition++) {
            TruckLinesReader reader = reader();
            reader.addSplits(List.of(split(file, partition, 2)));
            RecordingOutput out = new RecordingOutput();
            poll(reader, out, 700 + 900 * partition);  // the two stand at different lines
            checkpoint.addAll(reader.snapshotState(1L));
            before.add(out.positions);
            reader.close();
        }
        List<RecordingOutput> after = new ArrayList<>();
        for (int r = 0; r < readers; r++) {
            TruckLinesReader reader = reader();
            List<TruckLinesSplit> mine = new ArrayList<>();
            for (int i = r; i < checkpoint.size(); i += readers) {
                mine.add(new TruckLinesSplit.Serializer().deserialize(1,
                        new TruckLinesSplit.Serializer().serialize(checkpoint.get(i))));
            }
            if (!mine.isEmpty()) {
                reader.addSplits(mine);
            }
            reader.notifyNoMoreSplits();
            RecordingOutput out = new RecordingOutput();
            assertEquals(InputStatus.END_OF_INPUT, poll(reader, out, Integer.MAX_VALUE));
            after.add(out);
            reader.close();
        }
        for (int partition = 0; partition < 2; partition++) {
            List<String> restored = new ArrayList<>();
            for (RecordingOutput out : after) {
                for (String position : out.positions) {
                    int line = Integer.parseInt(position.substring(position.lastIndexOf(':') + 1));
                    if (partitionOf(lines(file).get(line - 1), 2) == partition) {
                        restored.add(position);
                    }
                }
            }
            List<String> whole = new ArrayList<>(before.get(partition));
            whole.addAll(restored);
            assertEquals(positionsOf(file, partition, 2), whole, "partition " + partition);
        }
        for (RecordingOutput out : after) {  // a reader's lines in file order, whichever partitions it holds
            List<Integer> numbers = new ArrayList<>();
            out.positions.forEach(p -> numbers.add(Integer.parseInt(p.substring(p.lastIndexOf(':') + 1))));
            List<Integer> sorted = new ArrayList<>(numbers);
            sorted.sort(null);
            assertEquals(sorted, numbers);
        }
    }

    @Test
    void twoPartitionsRestoredInOneReaderAreReadInOnePassEachLineOnce() throws IOException {
        restoredAt(1);
    }

    @Test
    void twoPartitionsRestoredInThreeReadersLeaveOneReaderThatEndsAtOnce() throws IOException {
        restoredAt(3);
    }

    @Test
    void aPartitionAddedWhileReadingIsReadFromItsOwnPosition() throws IOException {
        Path file = telemetry();
        TruckLinesReader reader = reader();
        reader.addSplits(List.of(split(file, 0, 2)));
        RecordingOutput out = new RecordingOutput();
        poll(reader, out, 1500);
        reader.addSplits(List.of(split(file, 1, 2)));
        reader.notifyNoMoreSplits();
        assertEquals(InputStatus.END_OF_INPUT, poll(reader, out, Integer.MAX_VALUE));
        List<String> expected = new ArrayList<>(positionsOf(file, 0, 2));
        expected.addAll(positionsOf(file, 1, 2));
        List<String> got = new ArrayList<>(out.positions);
        expected.sort(null);
        got.sort(null);
        assertEquals(expected, got);
    }

    @Test
    void withoutSplitsAReaderWaitsUntilToldThereAreNoMore() throws Exception {
        TruckLinesReader reader = reader();
        RecordingOutput out = new RecordingOutput();
        assertEquals(InputStatus.NOTHING_AVAILABLE, reader.pollNext(out));
        var available = reader.isAvailable();
        assertTrue(!available.isDone());
        reader.notifyNoMoreSplits();
        assertTrue(available.isDone());
        assertEquals(InputStatus.END_OF_INPUT, reader.pollNext(out));
    }

    @Test
    void aReaderRefusesPartitionsOfAnotherPartitioning() throws IOException {
        Path file = telemetry();
        TruckLinesReader reader = reader();
        reader.addSplits(List.of(split(file, 0, 2)));
        assertThrows(IllegalStateException.class, () -> reader.addSplits(List.of(split(file, 1, 3))));
    }

    @Test
    void theEnumeratorGivesPartitionPToSubtaskPModuloTheParallelismAndSplitsGivenBackToTheirReader()
            throws Exception {
        try (MockSplitEnumeratorContext<TruckLinesSplit> context = new MockSplitEnumeratorContext<>(2)) {
            TruckPartitionedFileSource source = new TruckPartitionedFileSource("/f", 3, MAX_PARALLELISM);
            var enumerator = source.createEnumerator(context);
            enumerator.start();
            for (int subtask = 0; subtask < 2; subtask++) {
                context.registerReader(new ReaderInfo(subtask, "localhost"));
                enumerator.addReader(subtask);
                assertTrue(context.hasNoMoreSplits(subtask));
            }
            assertEquals(Map.of(0, List.of("0/3", "2/3")), ids(context.getSplitsAssignmentSequence().get(0)));
            assertEquals(Map.of(1, List.of("1/3")), ids(context.getSplitsAssignmentSequence().get(1)));
            assertTrue(enumerator.snapshotState(1L).isEmpty());

            TruckLinesSplit given = new TruckLinesSplit("/f", 2, 3, 10L, 1L);
            enumerator.addSplitsBack(List.of(given), 1);
            List<TruckLinesSplit> state = new TruckLinesSplit.ListSerializer().deserialize(1,
                    new TruckLinesSplit.ListSerializer().serialize(enumerator.snapshotState(2L)));
            assertEquals("2/3", state.get(0).splitId());
            assertEquals(10L, state.get(0).offset);
            enumerator.addReader(0);
            assertEquals(2, context.getSplitsAssignmentSequence().size(), "not to another reader");
            enumerator.addReader(1);
            assertEquals(Map.of(1, List.of("2/3")), ids(context.getSplitsAssignmentSequence().get(2)));
        }
    }

    private static Map<Integer, List<String>> ids(SplitsAssignment<TruckLinesSplit> assignment) {
        Map<Integer, List<String>> out = new java.util.TreeMap<>();
        assignment.assignment().forEach((subtask, splits) -> {
            List<String> names = new ArrayList<>();
            splits.forEach(s -> names.add(s.splitId()));
            out.put(subtask, names);
        });
        return out;
    }
}
