#!/usr/bin/env python3
"""Drives a Skald server with kafka-python and prints a JSON summary of what happened.

Usage: kafka_python_check.py BOOTSTRAP TOPIC COUNT

Creates TOPIC with 2 partitions (and tries again, which must fail), sends COUNT keyed records
to partition i % 2 with kafka-python's default producer (idempotent, acks=all, five requests in
flight since 3.0), reads them back with assign + seek_to_beginning, and prints one JSON object;
tests/interop_kafka_python.rs asserts it exactly. Any exception exits non-zero.
"""

import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError

PARTITIONS = 2
DEADLINE_S = 60


def create_topic(admin, new_topic):
    """[[topic, error_code]]: kafka-python 3 returns the response as a dict, or raises on a
    topic error."""
    try:
        response = admin.create_topics([new_topic], timeout_ms=15000)
    except KafkaError as e:
        return [[new_topic.name, e.errno]]
    return [[entry["name"], entry["error_code"]] for entry in response["topics"]]


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    summary = {"kafka_python": __import__("kafka").__version__}

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="skald-tests",
                             request_timeout_ms=15000)
    new_topic = NewTopic(name=topic, num_partitions=PARTITIONS, replication_factor=1)
    summary["create"] = create_topic(admin, new_topic)
    summary["create_again"] = create_topic(admin, new_topic)
    summary["topics"] = sorted(admin.list_topics())
    described = admin.describe_topics([topic])
    summary["describe"] = [
        {"topic": t["name"], "error_code": t["error_code"],
         "partitions": sorted(p["partition_index"] for p in t["partitions"])}
        for t in described
    ]
    admin.close()

    # Every setting left at its default, as an application would.
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    summary["producer_idempotent"] = bool(producer.config["enable_idempotence"])
    futures = []
    for i in range(count):
        futures.append(producer.send(topic, key=b"key-%d" % i, value=b"value-%d" % i,
                                     partition=i % PARTITIONS))
    produced = []
    for i, future in enumerate(futures):
        metadata = future.get(timeout=30)
        produced.append([metadata.partition, metadata.offset, "key-%d" % i, "value-%d" % i])
    producer.close()
    summary["produced"] = produced

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="skald-tests",
                             group_id=None, enable_auto_commit=False,
                             auto_offset_reset="none")
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    consumed = []
    deadline = time.monotonic() + DEADLINE_S
    while len(consumed) < count and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                consumed.append([tp.partition, r.offset, r.key.decode(), r.value.decode()])
    consumed.sort()
    summary["consumed"] = consumed
    summary["end_offsets"] = {str(tp.partition): offset
                              for tp, offset in sorted(consumer.end_offsets(partitions).items())}
    summary["beginning_offsets"] = {str(tp.partition): offset
                                    for tp, offset in sorted(consumer.beginning_offsets(partitions).items())}
    consumer.close()

    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
