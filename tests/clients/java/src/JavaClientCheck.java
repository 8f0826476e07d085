import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Drives a Skald server with Apache Kafka's Java client (kafka-clients 4.x) and prints one JSON
 * summary; tests/interop_java.rs compares it exactly.
 *
 * Usage: JavaClientCheck BOOTSTRAP TOPIC GROUP BASE_TIMESTAMP_MS first|second
 *
 * "first": Admin creates TOPIC (2 partitions; again, which must fail) and describes it; one
 * producer per compression codec, every other setting left at its default (idempotent, acks=all),
 * sends 10 keyed records with headers and explicit timestamps each, record i to partition i % 2;
 * consumer A subscribes in GROUP, reads all of them, commits {p0: 10, p1: 5}, and Admin describes
 * the group while A is its member. The test then restarts the server.
 * "second": consumer B subscribes in GROUP and must resume exactly at the commit; a group-less
 * consumer checks offsetsForTimes, seek and pause/resume; Admin lists offsets, the group's
 * offsets and description, deletes records and describes the cluster.
 * Timestamps are printed relative to BASE_TIMESTAMP_MS. Any exception exits non-zero.
 */
public final class JavaClientCheck {
    static final int PARTITIONS = 2;
    static final List<String> CODECS = List.of("none", "gzip", "snappy", "lz4", "zstd");
    static final int PER_CODEC = 10;
    static final int RECORDS = CODECS.size() * PER_CODEC;
    static final Duration DEADLINE = Duration.ofSeconds(60);
    static final Map<Integer, Long> COMMIT = Map.of(0, 10L, 1, 5L);

    final String bootstrap;
    final String topic;
    final String group;
    final long baseTimestamp;
    final Map<String, Object> summary = new TreeMap<>();

    JavaClientCheck(String bootstrap, String topic, String group, long baseTimestamp) {
        this.bootstrap = bootstrap;
        this.topic = topic;
        this.group = group;
        this.baseTimestamp = baseTimestamp;
    }

    public static void main(String[] args) throws Exception {
        JavaClientCheck check = new JavaClientCheck(args[0], args[1], args[2], Long.parseLong(args[3]));
        switch (args[4]) {
            case "first" -> check.first();
            case "second" -> check.second();
            default -> throw new IllegalArgumentException("phase: " + args[4]);
        }
        System.out.println(Json.write(check.summary));
    }

    void first() throws Exception {
        try (Admin admin = admin()) {
            NewTopic newTopic = new NewTopic(topic, PARTITIONS, (short) 1);
            summary.put("create", outcome(() -> admin.createTopics(List.of(newTopic)).all().get()));
            summary.put("create_again", outcome(() -> admin.createTopics(List.of(newTopic)).all().get()));
            summary.put("describe_unknown", outcome(() -> admin.describeTopics(List.of(topic + "-unknown")).allTopicNames().get()));
            TopicDescription description = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            List<Object> partitions = new ArrayList<>();
            for (TopicPartitionInfo p : description.partitions()) {
                partitions.add(List.of(p.partition(), p.leader().id(), nodeIds(p.replicas()), nodeIds(p.isr())));
            }
            summary.put("describe", Map.of("name", description.name(), "internal", description.isInternal(),
                    "has_topic_id", description.topicId() != null && !description.topicId().toString().isEmpty(),
                    "partitions", partitions));

            summary.put("produced", produce());

            try (KafkaConsumer<String, String> consumerA = groupConsumer("consumer-a")) {
                consumerA.subscribe(List.of(topic));
                List<Object> consumed = pollUntil(consumerA, RECORDS);
                summary.put("consumed_a", sorted(consumed));
                Map<TopicPartition, OffsetAndMetadata> commit = new LinkedHashMap<>();
                COMMIT.forEach((p, offset) -> commit.put(new TopicPartition(topic, p), new OffsetAndMetadata(offset, "java")));
                consumerA.commitSync(commit);
                Map<String, Object> committed = new TreeMap<>();
                consumerA.committed(commit.keySet()).forEach((tp, om) -> committed.put(
                        String.valueOf(tp.partition()), List.of(om.offset(), om.metadata())));
                summary.put("committed_a", committed);
                summary.put("group_with_a", describeGroup(admin));
            }
        }
    }

    void second() throws Exception {
        List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
        try (Admin admin = admin()) {
            summary.put("group_after_restart", describeGroup(admin));
            try (KafkaConsumer<String, String> consumerB = groupConsumer("consumer-b")) {
                consumerB.subscribe(List.of(topic));
                int remaining = RECORDS - (int) (COMMIT.get(0) + COMMIT.get(1));
                summary.put("consumed_b", sorted(pollUntil(consumerB, remaining)));
                consumerB.commitSync();
            }
            summary.put("group_offsets", groupOffsets(admin));
            summary.put("group_after_b", describeGroup(admin));
            summary.put("groups", admin.listGroups(ListGroupsOptions.forConsumerGroups()).all().get().stream()
                    .map(g -> List.of(g.groupId(), g.protocol(), String.valueOf(g.groupState().orElse(null)))).toList());

            try (KafkaConsumer<String, String> consumer = plainConsumer()) {
                consumer.assign(tps);
                // offsetsForTimes: record 4 (partition 0, offset 2) exactly; between records 4 and 6
                // the next one (offset 3); past the last record nothing.
                Map<String, Object> forTimes = new TreeMap<>();
                for (long at : List.of(4_000L, 4_500L, 1_000_000L)) {
                    OffsetAndTimestamp found = consumer.offsetsForTimes(Map.of(tps.get(0), baseTimestamp + at)).get(tps.get(0));
                    forTimes.put(String.valueOf(at), found == null ? null : List.of(found.offset(), found.timestamp() - baseTimestamp));
                }
                summary.put("offsets_for_times_p0", forTimes);

                consumer.seek(tps.get(0), 20);
                consumer.seek(tps.get(1), 25);
                summary.put("after_seek_p0", sorted(pollUntil(consumer, 5)));

                consumer.seek(tps.get(0), 0);
                consumer.seek(tps.get(1), 0);
                consumer.pause(List.of(tps.get(0)));
                summary.put("paused", consumer.paused().stream().map(TopicPartition::partition).toList());
                List<Object> whilePaused = pollUntil(consumer, RECORDS / 2);
                summary.put("while_paused_partitions", partitionsOf(whilePaused));
                consumer.resume(List.of(tps.get(0)));
                summary.put("after_resume_partitions", partitionsOf(pollUntil(consumer, RECORDS / 2)));
            }

            summary.put("list_offsets", listOffsets(admin, tps));
            Map<TopicPartition, RecordsToDelete> delete = Map.of(tps.get(0), RecordsToDelete.beforeOffset(5));
            summary.put("delete_records_low_watermark", admin.deleteRecords(delete).lowWatermarks().get(tps.get(0)).get().lowWatermark());
            summary.put("list_offsets_after_delete", listOffsets(admin, tps));

            DescribeClusterResult cluster = admin.describeCluster();
            summary.put("cluster", Map.of(
                    "nodes", nodeIds(cluster.nodes().get()),
                    "controller", cluster.controller().get().id(),
                    "has_cluster_id", !cluster.clusterId().get().isEmpty()));
        }
    }

    /** One producer per codec; the records of codec c are c*PER_CODEC .. (c+1)*PER_CODEC - 1. */
    List<Object> produce() throws Exception {
        List<Object> produced = new ArrayList<>();
        for (int c = 0; c < CODECS.size(); c++) {
            Properties props = new Properties();
            props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            props.put(ProducerConfig.CLIENT_ID_CONFIG, "producer-" + CODECS.get(c));
            props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, CODECS.get(c));
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(props, new StringSerializer(), new StringSerializer())) {
                summary.put("producer_idempotent", isIdempotent(props));
                List<java.util.concurrent.Future<RecordMetadata>> futures = new ArrayList<>();
                for (int i = c * PER_CODEC; i < (c + 1) * PER_CODEC; i++) {
                    RecordHeaders headers = new RecordHeaders();
                    headers.add("codec", CODECS.get(c).getBytes(StandardCharsets.UTF_8));
                    headers.add("seq", String.valueOf(i).getBytes(StandardCharsets.UTF_8));
                    futures.add(producer.send(new ProducerRecord<>(topic, i % PARTITIONS, baseTimestamp + i * 1000L,
                            "key-" + i, "value-" + i, headers)));
                }
                for (var future : futures) {
                    RecordMetadata m = future.get();
                    produced.add(List.of(m.partition(), m.offset(), m.timestamp() - baseTimestamp));
                }
            }
        }
        return produced;
    }

    /** What the producer config resolves enable.idempotence to when it is left unset. */
    static Boolean isIdempotent(Properties props) {
        Map<String, Object> raw = new LinkedHashMap<>();
        props.forEach((k, v) -> raw.put((String) k, v));
        raw.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        raw.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        return new ProducerConfig(raw).getBoolean(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG);
    }

    Admin admin() {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "java-admin");
        return Admin.create(props);
    }

    KafkaConsumer<String, String> groupConsumer(String clientId) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, clientId);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        return new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer());
    }

    KafkaConsumer<String, String> plainConsumer() {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "consumer-assigned");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        return new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer());
    }

    /** Polls until `count` records arrived (or the deadline passed); each as
     * [partition, offset, relative timestamp, key, value, [[header key, header value], ...]]. */
    List<Object> pollUntil(KafkaConsumer<String, String> consumer, int count) {
        List<Object> records = new ArrayList<>();
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        while (records.size() < count && System.nanoTime() < deadline) {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                List<Object> headers = new ArrayList<>();
                for (Header h : r.headers()) {
                    headers.add(List.of(h.key(), new String(h.value(), StandardCharsets.UTF_8)));
                }
                records.add(List.of(r.partition(), r.offset(), r.timestamp() - baseTimestamp, r.key(), r.value(), headers));
            }
        }
        return records;
    }

    Map<String, Object> describeGroup(Admin admin) throws Exception {
        ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
        List<Object> members = new ArrayList<>();
        for (MemberDescription m : d.members()) {
            members.add(List.of(m.clientId(), m.assignment().topicPartitions().stream()
                    .map(tp -> tp.topic() + "-" + tp.partition()).sorted().toList()));
        }
        Map<String, Object> out = new TreeMap<>();
        out.put("state", String.valueOf(d.groupState()));
        out.put("type", String.valueOf(d.type()));
        out.put("assignor", d.partitionAssignor());
        out.put("members", members);
        out.put("coordinator", d.coordinator().id());
        return out;
    }

    Map<String, Object> groupOffsets(Admin admin) throws Exception {
        Map<String, Object> out = new TreeMap<>();
        admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                .forEach((tp, om) -> out.put(tp.topic() + "-" + tp.partition(), om.offset()));
        return out;
    }

    Map<String, Object> listOffsets(Admin admin, List<TopicPartition> tps) throws Exception {
        Map<String, Object> out = new TreeMap<>();
        Map<String, OffsetSpec> specs = new LinkedHashMap<>();
        specs.put("earliest", OffsetSpec.earliest());
        specs.put("latest", OffsetSpec.latest());
        specs.put("at_5000", OffsetSpec.forTimestamp(baseTimestamp + 5_000));
        // ListOffsets v7+ (KIP-734): the record with the largest timestamp.
        specs.put("max_timestamp", OffsetSpec.maxTimestamp());
        for (var spec : specs.entrySet()) {
            Map<TopicPartition, OffsetSpec> request = new LinkedHashMap<>();
            tps.forEach(tp -> request.put(tp, spec.getValue()));
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> result = admin.listOffsets(request).all().get();
            List<Object> offsets = new ArrayList<>();
            for (TopicPartition tp : tps) {
                offsets.add(result.get(tp).offset());
            }
            out.put(spec.getKey(), offsets);
        }
        return out;
    }

    static List<Integer> nodeIds(Collection<Node> nodes) {
        return nodes.stream().map(Node::id).sorted().toList();
    }

    static List<Object> partitionsOf(List<Object> records) {
        return records.stream().map(r -> ((List<?>) r).get(0)).distinct().sorted((a, b) -> (Integer) a - (Integer) b).map(p -> (Object) p).toList();
    }

    @SuppressWarnings("unchecked")
    static List<Object> sorted(List<Object> records) {
        List<Object> out = new ArrayList<>(records);
        out.sort((a, b) -> {
            List<Object> x = (List<Object>) a, y = (List<Object>) b;
            int c = Integer.compare((Integer) x.get(0), (Integer) y.get(0));
            return c != 0 ? c : Long.compare((Long) x.get(1), (Long) y.get(1));
        });
        return out;
    }

    interface Action {
        void run() throws Exception;
    }

    /** "ok", or the simple name of the exception the call failed with. */
    static String outcome(Action action) {
        try {
            action.run();
            return "ok";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }
}
