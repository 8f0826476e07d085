import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Transactions with Apache Kafka's Java client (kafka-clients 4.x) against a Skald server; prints
 * one JSON summary that tests/interop_java_transactions.rs compares exactly.
 *
 * Usage: JavaTxnCheck BOOTSTRAP
 *
 * A default producer writes 100 inputs "in-0".."in-99" to `txn-input`. A consume-transform-produce
 * loop (a transactional producer with every other setting at its default, a consumer with
 * auto-commit off) writes each input upper-cased to `txn-output` with its input position sent to
 * the transaction (sendOffsetsToTransaction), 25 inputs per transaction; the third transaction
 * is flushed, then aborted, and its inputs read again from the committed position. Then a second producer with
 * the same transactional.id fences the first. A read_committed consumer must see every input once,
 * in order; a read_uncommitted one the aborted transaction's records too; the group's committed
 * offset must be the input's end; Admin lists and describes the transaction.
 */
public final class JavaTxnCheck {
    static final String INPUT = "txn-input";
    static final String OUTPUT = "txn-output";
    static final String GROUP = "java-etl";
    static final String TXN_ID = "java-etl-1";
    static final int INPUTS = 100;
    static final int PER_TXN = 25;
    static final Duration DEADLINE = Duration.ofSeconds(60);

    final String bootstrap;
    final Map<String, Object> summary = new TreeMap<>();

    JavaTxnCheck(String bootstrap) {
        this.bootstrap = bootstrap;
    }

    public static void main(String[] args) throws Exception {
        JavaTxnCheck check = new JavaTxnCheck(args[0]);
        check.run();
        System.out.println(Json.write(check.summary));
    }

    Properties common() {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        return props;
    }

    KafkaProducer<String, String> producer(String transactionalId) {
        Properties props = common();
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        if (transactionalId != null) {
            props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        }
        return new KafkaProducer<>(props);
    }

    KafkaConsumer<String, String> consumer(String group, String isolation) {
        Properties props = common();
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        if (group != null) {
            props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        if (isolation != null) {
            props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        }
        return new KafkaConsumer<>(props);
    }

    void run() throws Exception {
        try (Admin admin = Admin.create(common())) {
            admin.createTopics(List.of(new NewTopic(INPUT, 1, (short) 1), new NewTopic(OUTPUT, 1, (short) 1)))
                .all().get();
        }
        try (KafkaProducer<String, String> plain = producer(null)) {
            for (int i = 0; i < INPUTS; i++) {
                plain.send(new ProducerRecord<>(INPUT, 0, null, "in-" + i)).get();
            }
        }

        TopicPartition input = new TopicPartition(INPUT, 0);
        List<String> outcomes = new ArrayList<>();
        KafkaProducer<String, String> etl = producer(TXN_ID);
        etl.initTransactions();
        try (KafkaConsumer<String, String> reader = consumer(GROUP, null)) {
            reader.assign(List.of(input));
            long position = 0;
            int transaction = 0;
            while (position < INPUTS) {
                reader.seek(input, position);
                List<ConsumerRecord<String, String>> batch = new ArrayList<>();
                long deadline = System.nanoTime() + DEADLINE.toNanos();
                while (batch.size() < PER_TXN && System.nanoTime() < deadline) {
                    for (ConsumerRecord<String, String> record : reader.poll(Duration.ofMillis(100))) {
                        if (batch.size() < PER_TXN) {
                            batch.add(record);
                        }
                    }
                }
                if (batch.size() < PER_TXN) {
                    throw new IllegalStateException("read " + batch.size() + " inputs from " + position);
                }
                long next = batch.get(batch.size() - 1).offset() + 1;
                etl.beginTransaction();
                for (ConsumerRecord<String, String> record : batch) {
                    etl.send(new ProducerRecord<>(OUTPUT, 0, null, record.value().toUpperCase()));
                }
                etl.sendOffsetsToTransaction(Map.of(input, new OffsetAndMetadata(next)), reader.groupMetadata());
                transaction++;
                if (transaction == 3) {
                    // Written first, so the abort has records to abort: the Java producer
                    // drops batches it has not sent yet instead.
                    etl.flush();
                    etl.abortTransaction();
                    outcomes.add("abort@" + position);
                } else {
                    etl.commitTransaction();
                    outcomes.add("commit@" + position);
                    position = next;
                }
            }
        }
        summary.put("transactions", outcomes);

        // A second producer with the same transactional.id fences the first.
        try (KafkaProducer<String, String> successor = producer(TXN_ID)) {
            successor.initTransactions();
            String fenced;
            try {
                etl.beginTransaction();
                etl.send(new ProducerRecord<>(OUTPUT, 0, null, "zombie")).get();
                etl.commitTransaction();
                fenced = "not fenced";
            } catch (ProducerFencedException e) {
                fenced = "ProducerFencedException";
            } catch (java.util.concurrent.ExecutionException e) {
                fenced = e.getCause().getClass().getSimpleName();
            }
            summary.put("zombie", fenced);
        }
        etl.close(Duration.ZERO);

        summary.put("read_committed", readAll("read_committed", INPUTS));
        summary.put("read_uncommitted", readAll("read_uncommitted", INPUTS + PER_TXN));
        try (Admin admin = Admin.create(common())) {
            Map<TopicPartition, OffsetAndMetadata> offsets =
                admin.listConsumerGroupOffsets(GROUP).partitionsToOffsetAndMetadata().get();
            summary.put("group_offset", offsets.get(input).offset());
            List<String> listed = new ArrayList<>();
            for (TransactionListing listing : admin.listTransactions().all().get()) {
                listed.add(listing.transactionalId() + ":" + listing.state());
            }
            summary.put("listed", listed);
            TransactionDescription described = admin.describeTransactions(List.of(TXN_ID)).all().get().get(TXN_ID);
            summary.put("described", List.of(described.state().toString(), described.producerEpoch(),
                described.topicPartitions().size()));
        }
    }

    /** Every value of OUTPUT, read from the start with `isolation` until `expected` arrived. */
    List<String> readAll(String isolation, int expected) {
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = consumer(null, isolation)) {
            TopicPartition output = new TopicPartition(OUTPUT, 0);
            consumer.assign(List.of(output));
            consumer.seekToBeginning(List.of(output));
            long deadline = System.nanoTime() + DEADLINE.toNanos();
            while (values.size() < expected && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(100))) {
                    values.add(record.value());
                }
            }
            // Anything past what was expected shows up too.
            for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(500))) {
                values.add(record.value());
            }
        }
        return values;
    }
}
