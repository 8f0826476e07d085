#!/usr/bin/env python3
"""Drives a Skald server with confluent-kafka (Confluent's Python client over librdkafka) and
prints one JSON summary; tests/interop_python.rs compares it exactly.

Usage: confluent_kafka_check.py BOOTSTRAP TOPIC GROUP BASE_TIMESTAMP_MS first|second

"first": the AdminClient creates TOPIC (2 partitions; again, which must fail); one producer per
compression codec (librdkafka's defaults otherwise) sends 10 keyed records with headers and
explicit timestamps each, record i to partition i % 2; a group consumer reads them all, commits
{p0: 10, p1: 5} and the admin describes the group while it is the member. The test then restarts
the server.
"second": a new member must resume exactly at the commit and commits what it read; the admin
lists the group's offsets, describes and lists groups; a group-less consumer checks
offsets_for_times, seek and pause/resume; the admin lists offsets, deletes records and describes
the cluster. Timestamps are printed relative to BASE_TIMESTAMP_MS. Any exception exits non-zero.
"""

import json
import sys
import time

from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

PARTITIONS = 2
PER_CODEC = 10
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
RECORDS = len(CODECS) * PER_CODEC
COMMIT = {0: 10, 1: 5}
DEADLINE_S = 60
TIMEOUT_S = 30


class Check:
    def __init__(self, bootstrap, topic, group, base):
        self.bootstrap, self.topic, self.group, self.base = bootstrap, topic, group, base
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.summary = {}

    def tp(self, partition, offset=-1001):
        return TopicPartition(self.topic, partition, offset)

    def record(self, m):
        if m.error() is not None:
            raise KafkaException(m.error())
        headers = [[k, v.decode()] for k, v in (m.headers() or [])]
        return [m.partition(), m.offset(), m.timestamp()[1] - self.base, m.key().decode(),
                m.value().decode(), headers]

    def poll(self, consumer, count):
        """Reads until `count` records arrived; sorted by partition and offset."""
        records = []
        deadline = time.monotonic() + DEADLINE_S
        while len(records) < count and time.monotonic() < deadline:
            m = consumer.poll(0.2)
            if m is not None:
                records.append(self.record(m))
        return sorted(records)

    def group_consumer(self, client_id):
        return Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                         "client.id": client_id, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})

    def describe_group(self):
        g = self.admin.describe_consumer_groups([self.group])[self.group].result(TIMEOUT_S)
        members = [[m.client_id, sorted("%s-%d" % (tp.topic, tp.partition)
                                        for tp in m.assignment.topic_partitions)]
                   for m in g.members]
        return {"state": g.state.name, "assignor": g.partition_assignor, "members": members,
                "coordinator": g.coordinator.id, "simple": g.is_simple_consumer_group}

    def group_offsets(self):
        request = [ConsumerGroupTopicPartitions(self.group)]
        result = self.admin.list_consumer_group_offsets(request)[self.group].result(TIMEOUT_S)
        return {"%s-%d" % (tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}

    def list_offsets(self):
        out = {}
        specs = {"earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest(),
                 "at_5000": OffsetSpec.for_timestamp(self.base + 5000)}
        for name, spec in specs.items():
            futures = self.admin.list_offsets({self.tp(p): spec for p in range(PARTITIONS)})
            out[name] = [futures[self.tp(p)].result(TIMEOUT_S).offset for p in range(PARTITIONS)]
        return out

    def first(self):
        for key in ["create", "create_again"]:
            future = self.admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)])[self.topic]
            try:
                future.result(TIMEOUT_S)
                self.summary[key] = "ok"
            except KafkaException as e:
                self.summary[key] = e.args[0].name()

        produced = [None] * RECORDS
        for c, codec in enumerate(CODECS):
            producer = Producer({"bootstrap.servers": self.bootstrap, "compression.type": codec})
            failures = []

            def delivered(err, m, i):
                if err is not None:
                    failures.append(err)
                else:
                    produced[i] = [m.partition(), m.offset(), m.timestamp()[1] - self.base]

            for i in range(c * PER_CODEC, (c + 1) * PER_CODEC):
                producer.produce(self.topic, key=b"key-%d" % i, value=b"value-%d" % i,
                                 partition=i % PARTITIONS, timestamp=self.base + i * 1000,
                                 headers=[("codec", codec.encode()), ("seq", str(i).encode())],
                                 on_delivery=lambda err, m, i=i: delivered(err, m, i))
            if producer.flush(TIMEOUT_S) != 0 or failures:
                raise RuntimeError("produce (%s): %s" % (codec, failures or "not flushed"))
        self.summary["produced"] = produced

        consumer = self.group_consumer("confluent-a")
        consumer.subscribe([self.topic])
        try:
            self.summary["consumed_a"] = self.poll(consumer, RECORDS)
            consumer.commit(offsets=[self.tp(p, o) for p, o in COMMIT.items()], asynchronous=False)
            self.summary["committed_a"] = self.group_offsets()
            self.summary["group_with_a"] = self.describe_group()
        finally:
            consumer.close()

    def second(self):
        self.summary["group_after_restart"] = self.describe_group()
        consumer = self.group_consumer("confluent-b")
        consumer.subscribe([self.topic])
        try:
            self.summary["consumed_b"] = self.poll(consumer, RECORDS - sum(COMMIT.values()))
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        self.summary["group_offsets"] = self.group_offsets()
        self.summary["group_after_b"] = self.describe_group()
        listed = self.admin.list_consumer_groups().result(TIMEOUT_S)
        self.summary["groups"] = sorted([g.group_id, g.state.name] for g in listed.valid)

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "unused",
                             "enable.auto.commit": False, "auto.offset.reset": "error"})
        try:
            found = {}
            for at in [4000, 4500, 1000000]:
                [o] = consumer.offsets_for_times([self.tp(0, self.base + at)], TIMEOUT_S)
                found[str(at)] = o.offset
            self.summary["offsets_for_times_p0"] = found

            consumer.assign([self.tp(0, 20), self.tp(1, RECORDS // PARTITIONS)])
            self.summary["after_seek_p0"] = self.poll(consumer, 5)

            consumer.seek(self.tp(0, 0))
            consumer.seek(self.tp(1, 0))
            consumer.pause([self.tp(0)])
            while_paused = self.poll(consumer, RECORDS // PARTITIONS)
            self.summary["while_paused_partitions"] = sorted({r[0] for r in while_paused})
            consumer.resume([self.tp(0)])
            after = self.poll(consumer, RECORDS // PARTITIONS)
            self.summary["after_resume_partitions"] = sorted({r[0] for r in after})
        finally:
            consumer.close()

        self.summary["list_offsets"] = self.list_offsets()
        deleted = self.admin.delete_records([self.tp(0, 5)])
        self.summary["delete_records_low_watermark"] = [
            f.result(TIMEOUT_S).low_watermark for f in deleted.values()]
        self.summary["list_offsets_after_delete"] = self.list_offsets()
        cluster = self.admin.describe_cluster().result(TIMEOUT_S)
        self.summary["cluster"] = {"nodes": [n.id for n in cluster.nodes],
                                   "controller": cluster.controller.id,
                                   "has_cluster_id": bool(cluster.cluster_id)}


def main():
    bootstrap, topic, group, base, phase = sys.argv[1:6]
    check = Check(bootstrap, topic, group, int(base))
    if phase == "first":
        check.first()
    elif phase == "second":
        check.second()
    else:
        raise ValueError("phase %r" % phase)
    print(json.dumps(check.summary, sort_keys=True))


if __name__ == "__main__":
    main()
