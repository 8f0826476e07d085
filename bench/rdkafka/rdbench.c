/*
 * rdbench: librdkafka's side of scripts/bench-compare. One small program so both brokers are
 * driven by the same C client with the same settings; librdkafka's own rdkafka_performance is
 * not packaged, and kcat reads records from stdin and times nothing.
 *
 *   rdbench produce  -b BROKERS -t TOPIC -n RECORDS -s BYTES [-X key=value]...
 *   rdbench consume  -b BROKERS -t TOPIC -n RECORDS [-X key=value]...
 *   rdbench latency  -b BROKERS -t TOPIC -r RATE -d SECONDS -w WARMUP_SECONDS -s BYTES [-X ...]
 *
 * produce sends RECORDS records of BYTES bytes as fast as librdkafka takes them (retrying on a
 * full queue) and times until every delivery report is in. consume assigns every partition of
 * TOPIC from the beginning and times until RECORDS records arrived (from the first one, so the
 * metadata round trip is not counted). latency sends at a fixed RATE against a schedule: record
 * i is due at start + i/RATE, and both of its latencies are measured from that due time, not from
 * when send() happened to run, so a stall that delays later sends is charged to them (no
 * coordinated omission). The acknowledgement latency ends at the delivery report; the end-to-end
 * one ends when a consumer in the same process (assigned at the partitions' ends before the
 * first send) receives the record, whose first 8 bytes carry its due time. Records due in the
 * first WARMUP_SECONDS are sent but not counted. Every -X goes to both producer and consumer
 * configs (librdkafka notes a producer key set on the consumer and ignores it).
 *
 * Output is one line of key=value pairs on stdout, for the script to parse.
 */
#define _GNU_SOURCE
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONF 64

static const char *brokers = "127.0.0.1:9092", *topic;
static long long records = 0, record_size = 1024;
static double rate = 10000, duration = 30, warmup = 5;
static const char *conf_keys[MAX_CONF], *conf_values[MAX_CONF];
static int conf_count = 0;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "rdbench: %s: %s\n", what, detail);
    exit(1);
}

static void set(rd_kafka_conf_t *conf, const char *key, const char *value) {
    char err[512];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK)
        die(key, err);
}

static rd_kafka_conf_t *base_conf(void) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", brokers);
    for (int i = 0; i < conf_count; i++)
        set(conf, conf_keys[i], conf_values[i]);
    return conf;
}

/* ---- produce ---------------------------------------------------------------------------- */

static atomic_llong delivered = 0, failed = 0;

static void count_report(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (atomic_fetch_add(&failed, 1) < 5)
            fprintf(stderr, "rdbench: delivery failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        atomic_fetch_add(&delivered, 1);
    }
}

static rd_kafka_t *new_producer(void (*report)(rd_kafka_t *, const rd_kafka_message_t *, void *)) {
    char err[512];
    rd_kafka_conf_t *conf = base_conf();
    rd_kafka_conf_set_dr_msg_cb(conf, report);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        die("producer", err);
    return rk;
}

static int produce(void) {
    rd_kafka_t *rk = new_producer(count_report);
    char *payload = malloc(record_size);
    for (long long i = 0; i < record_size; i++)
        payload[i] = (char)('a' + i % 26);
    /* One record first, so the metadata and connection set-up are not timed. */
    rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(payload, record_size),
                      RD_KAFKA_V_END);
    rd_kafka_flush(rk, 30000);
    if (atomic_load(&delivered) != 1)
        die("produce", "the first record was not acknowledged");
    atomic_store(&delivered, 0);
    int64_t start = now_ns();
    for (long long i = 0; i < records;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(payload, record_size),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 1);
            continue;
        }
        if (e)
            die("produce", rd_kafka_err2str(e));
        i++;
        if ((i & 1023) == 0)
            rd_kafka_poll(rk, 0);
    }
    while (atomic_load(&delivered) + atomic_load(&failed) < records)
        rd_kafka_poll(rk, 100);
    double secs = (now_ns() - start) / 1e9;
    printf("records=%lld failed=%lld seconds=%.3f records_per_s=%.0f mb_per_s=%.1f\n",
           atomic_load(&delivered), atomic_load(&failed), secs, records / secs,
           records * (double)record_size / secs / 1e6);
    rd_kafka_destroy(rk);
    free(payload);
    return atomic_load(&failed) ? 1 : 0;
}

/* ---- consume ---------------------------------------------------------------------------- */

static rd_kafka_t *new_consumer(void) {
    char err[512], group[64];
    rd_kafka_conf_t *conf = base_conf();
    snprintf(group, sizeof group, "rdbench-%d-%lld", getpid(), (long long)now_ns());
    set(conf, "group.id", group);
    set(conf, "enable.auto.commit", "false");
    set(conf, "enable.partition.eof", "false");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk)
        die("consumer", err);
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Assigns every partition of the topic at OFFSET (beginning or end). */
static void assign_all(rd_kafka_t *rk, int64_t offset) {
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 30000);
    if (e)
        die("metadata", rd_kafka_err2str(e));
    if (md->topic_cnt != 1 || md->topics[0].err)
        die("metadata", "topic not found");
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id)->offset =
            offset;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    e = rd_kafka_assign(rk, parts);
    if (e)
        die("assign", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(parts);
}

static int consume(void) {
    rd_kafka_t *rk = new_consumer();
    assign_all(rk, RD_KAFKA_OFFSET_BEGINNING);
    long long got = 0, bytes = 0;
    int64_t start = 0, last = now_ns();
    while (got < records) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            if (now_ns() - last > 60LL * 1000000000LL)
                die("consume", "no record for 60 s");
            continue;
        }
        if (m->err) {
            fprintf(stderr, "rdbench: consume: %s\n", rd_kafka_message_errstr(m));
        } else {
            if (!start)
                start = now_ns();
            got++;
            bytes += m->len;
            last = now_ns();
        }
        rd_kafka_message_destroy(m);
    }
    double secs = (now_ns() - start) / 1e9;
    printf("records=%lld seconds=%.3f records_per_s=%.0f mb_per_s=%.1f\n", got, secs, got / secs,
           bytes / secs / 1e6);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}

/* ---- latency ---------------------------------------------------------------------------- */

static int64_t *ack_ns, *e2e_ns;  /* per record index; -1 until measured */
static long long total, counted_from;
static int64_t start_ns;
static atomic_int consumer_done = 0;
static atomic_llong e2e_seen = 0;

static void latency_report(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    long long i = (long long)(intptr_t)m->_private;
    if (m->err) {
        atomic_fetch_add(&failed, 1);
        return;
    }
    ack_ns[i] = now_ns() - (start_ns + (int64_t)(i * 1e9 / rate));
    atomic_fetch_add(&delivered, 1);
}

static void *consume_latency(void *arg) {
    rd_kafka_t *rk = arg;
    while (!atomic_load(&consumer_done)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err && m->len >= 16) {
            int64_t due, index;
            memcpy(&due, m->payload, 8);
            memcpy(&index, (char *)m->payload + 8, 8);
            if (index >= 0 && index < total) {
                e2e_ns[index] = now_ns() - due;
                atomic_fetch_add(&e2e_seen, 1);
            }
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Prints NAME_p50_ms=... for the counted records; returns how many were measured. */
static long long percentiles(const char *name, int64_t *v) {
    long long n = 0;
    for (long long i = counted_from; i < total; i++)
        if (v[i] >= 0)
            v[n++] = v[i];
    if (!n) {
        printf(" %s_count=0", name);
        return 0;
    }
    qsort(v, n, sizeof *v, cmp);
    double q[] = {0.50, 0.99, 0.999};
    const char *label[] = {"p50", "p99", "p999"};
    printf(" %s_count=%lld", name, n);
    for (int k = 0; k < 3; k++) {
        long long at = (long long)(q[k] * n);
        if (at >= n)
            at = n - 1;
        printf(" %s_%s_ms=%.3f", name, label[k], v[at] / 1e6);
    }
    printf(" %s_max_ms=%.3f", name, v[n - 1] / 1e6);
    return n;
}

static int latency(void) {
    if (record_size < 16)
        die("latency", "records must be at least 16 bytes (they carry their due time)");
    total = (long long)(rate * (duration + warmup));
    counted_from = (long long)(rate * warmup);
    ack_ns = malloc(total * sizeof *ack_ns);
    e2e_ns = malloc(total * sizeof *e2e_ns);
    for (long long i = 0; i < total; i++)
        ack_ns[i] = e2e_ns[i] = -1;

    rd_kafka_t *consumer = new_consumer();
    assign_all(consumer, RD_KAFKA_OFFSET_END);
    pthread_t reader;
    pthread_create(&reader, NULL, consume_latency, consumer);

    rd_kafka_t *rk = new_producer(latency_report);
    char *payload = calloc(1, record_size);
    /* The connections and metadata first (a record the consumer may or may not see: its index
     * is out of range and it is ignored). */
    int64_t none = -1;
    memcpy(payload + 8, &none, 8);
    rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(payload, record_size),
                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    rd_kafka_flush(rk, 30000);
    atomic_store(&delivered, 0);

    start_ns = now_ns();
    for (long long i = 0; i < total; i++) {
        int64_t due = start_ns + (int64_t)(i * 1e9 / rate);
        for (;;) {
            int64_t wait = due - now_ns();
            if (wait <= 0)
                break;
            rd_kafka_poll(rk, 0);
            if (wait > 200000) {
                struct timespec ts = {0, wait - 100000};
                nanosleep(&ts, NULL);
            }
        }
        memcpy(payload, &due, 8);
        int64_t index = i;
        memcpy(payload + 8, &index, 8);
        for (;;) {
            rd_kafka_resp_err_t e = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(payload, record_size),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE((void *)(intptr_t)i),
                RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_poll(rk, 1);
                continue;
            }
            if (e)
                die("produce", rd_kafka_err2str(e));
            break;
        }
        rd_kafka_poll(rk, 0);
    }
    double secs = (now_ns() - start_ns) / 1e9;
    rd_kafka_flush(rk, 60000);
    /* Give the consumer up to 10 s to see what was acknowledged. */
    int64_t deadline = now_ns() + 10LL * 1000000000LL;
    while (atomic_load(&e2e_seen) < atomic_load(&delivered) && now_ns() < deadline)
        usleep(10000);
    atomic_store(&consumer_done, 1);
    pthread_join(reader, NULL);

    printf("offered_per_s=%.0f achieved_per_s=%.0f sent=%lld failed=%lld", rate, total / secs,
           total, atomic_load(&failed));
    percentiles("ack", ack_ns);
    percentiles("e2e", e2e_ns);
    printf("\n");
    rd_kafka_destroy(rk);
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    return atomic_load(&failed) ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        die("usage", "rdbench produce|consume|latency -b BROKERS -t TOPIC ... (see the source)");
    const char *mode = argv[1];
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "b:t:n:s:r:d:w:X:")) != -1) {
        switch (opt) {
        case 'b': brokers = optarg; break;
        case 't': topic = optarg; break;
        case 'n': records = atoll(optarg); break;
        case 's': record_size = atoll(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'X': {
            char *eq = strchr(optarg, '=');
            if (!eq || conf_count == MAX_CONF)
                die("-X", optarg);
            *eq = 0;
            conf_keys[conf_count] = optarg;
            conf_values[conf_count++] = eq + 1;
            break;
        }
        default: die("usage", "unknown option");
        }
    }
    if (!topic)
        die("usage", "-t TOPIC is required");
    if (!strcmp(mode, "produce"))
        return produce();
    if (!strcmp(mode, "consume"))
        return consume();
    if (!strcmp(mode, "latency"))
        return latency();
    die("usage", "mode is produce, consume or latency");
    return 1;
}
