#!/usr/bin/env python3
"""Drives a Skald server with aiokafka and prints one JSON summary; tests/interop_python.rs
compares it exactly.

Usage: aiokafka_check.py BOOTSTRAP TOPIC GROUP BASE_TIMESTAMP_MS first|second

"first": the admin creates TOPIC (2 partitions; again, which must fail); one producer per
compression codec (aiokafka's defaults otherwise: acks=1, not idempotent) sends 10 keyed records
with headers and explicit timestamps each, record i to partition i % 2; a group consumer reads
them all, commits {p0: 10, p1: 5} and the admin describes the group while it is the member. The
test then restarts the server.
"second": a new member must resume exactly at the commit and commits what it read; the admin
reads the group's offsets, describes and lists groups; a group-less consumer checks
offsets_for_times, seek and pause/resume; the admin deletes records and describes the cluster.
Timestamps are printed relative to BASE_TIMESTAMP_MS. Any exception exits non-zero.
"""

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

PARTITIONS = 2
PER_CODEC = 10
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
RECORDS = len(CODECS) * PER_CODEC
COMMIT = {0: 10, 1: 5}
DEADLINE_S = 60


class Check:
    def __init__(self, bootstrap, topic, group, base):
        self.bootstrap, self.topic, self.group, self.base = bootstrap, topic, group, base
        self.tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.summary = {}

    def record(self, r):
        headers = [[k, v.decode()] for k, v in r.headers]
        return [r.partition, r.offset, r.timestamp - self.base, r.key.decode(), r.value.decode(),
                headers]

    async def poll(self, consumer, count):
        """Reads until `count` records arrived; sorted by partition and offset."""
        records = []
        deadline = time.monotonic() + DEADLINE_S
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(self.record(r) for r in batch)
        return sorted(records)

    def group_consumer(self, client_id):
        return AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
                                client_id=client_id, enable_auto_commit=False,
                                auto_offset_reset="earliest")

    async def describe_group(self, admin):
        [response] = await admin.describe_consumer_groups([self.group])
        [g] = response.groups
        error_code, _, state, protocol_type, protocol, members = g
        described = []
        for _, client_id, _, _, assignment in members:
            decoded = ConsumerProtocolMemberAssignment.decode(assignment)
            assigned = sorted("%s-%d" % (t, p) for t, ps in decoded.assignment for p in ps)
            described.append([client_id, assigned])
        return {"error_code": error_code, "state": state, "protocol_type": protocol_type,
                "protocol": protocol, "members": described}

    async def group_offsets(self, admin):
        offsets = await admin.list_consumer_group_offsets(self.group)
        return {"%s-%d" % (tp.topic, tp.partition): om.offset for tp, om in offsets.items()}

    async def first(self, admin):
        for key in ["create", "create_again"]:
            response = await admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)])
            self.summary[key] = [[t, code] for t, code, _ in response.topic_errors]

        produced = []
        for c, codec in enumerate(CODECS):
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                        compression_type=None if codec == "none" else codec)
            await producer.start()
            try:
                for i in range(c * PER_CODEC, (c + 1) * PER_CODEC):
                    m = await producer.send_and_wait(
                        self.topic, key=b"key-%d" % i, value=b"value-%d" % i,
                        partition=i % PARTITIONS, timestamp_ms=self.base + i * 1000,
                        headers=[("codec", codec.encode()), ("seq", str(i).encode())])
                    produced.append([m.partition, m.offset, m.timestamp - self.base])
            finally:
                await producer.stop()
        self.summary["produced"] = produced

        consumer = self.group_consumer("aiokafka-a")
        await consumer.start()
        try:
            self.summary["consumed_a"] = await self.poll(consumer, RECORDS)
            await consumer.commit({self.tps[p]: offset for p, offset in COMMIT.items()})
            self.summary["committed_a"] = await self.group_offsets(admin)
            self.summary["group_with_a"] = await self.describe_group(admin)
        finally:
            await consumer.stop()

    async def second(self, admin):
        self.summary["group_after_restart"] = await self.describe_group(admin)
        consumer = self.group_consumer("aiokafka-b")
        await consumer.start()
        try:
            remaining = RECORDS - sum(COMMIT.values())
            self.summary["consumed_b"] = await self.poll(consumer, remaining)
            await consumer.commit()
        finally:
            await consumer.stop()
        self.summary["group_offsets"] = await self.group_offsets(admin)
        self.summary["group_after_b"] = await self.describe_group(admin)
        self.summary["groups"] = sorted(list(g) for g in await admin.list_consumer_groups())

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="none")
        await consumer.start()
        try:
            consumer.assign(self.tps)
            found = {}
            for at in [4000, 4500, 1000000]:
                o = (await consumer.offsets_for_times({self.tps[0]: self.base + at}))[self.tps[0]]
                found[str(at)] = None if o is None else [o.offset, o.timestamp - self.base]
            self.summary["offsets_for_times_p0"] = found
            self.summary["beginning_offsets"] = sorted(
                (await consumer.beginning_offsets(self.tps)).values())
            self.summary["end_offsets"] = sorted((await consumer.end_offsets(self.tps)).values())

            consumer.seek(self.tps[0], 20)
            consumer.seek(self.tps[1], RECORDS // PARTITIONS)
            self.summary["after_seek_p0"] = await self.poll(consumer, 5)

            consumer.seek(self.tps[0], 0)
            consumer.seek(self.tps[1], 0)
            consumer.pause(self.tps[0])
            self.summary["paused"] = sorted(tp.partition for tp in consumer.paused())
            while_paused = await self.poll(consumer, RECORDS // PARTITIONS)
            self.summary["while_paused_partitions"] = sorted({r[0] for r in while_paused})
            consumer.resume(self.tps[0])
            after = await self.poll(consumer, RECORDS // PARTITIONS)
            self.summary["after_resume_partitions"] = sorted({r[0] for r in after})
        finally:
            await consumer.stop()

        deleted = await admin.delete_records({self.tps[0]: RecordsToDelete(5)})
        self.summary["delete_records"] = {"%s-%d" % (tp.topic, tp.partition): low
                                          for tp, low in deleted.items()}
        cluster = await admin.describe_cluster()
        self.summary["cluster"] = {"brokers": [b["node_id"] for b in cluster["brokers"]],
                                   "controller": cluster["controller_id"],
                                   "has_cluster_id": bool(cluster["cluster_id"])}


async def main():
    bootstrap, topic, group, base, phase = sys.argv[1:6]
    check = Check(bootstrap, topic, group, int(base))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="aiokafka-admin")
    await admin.start()
    try:
        if phase == "first":
            await check.first(admin)
        elif phase == "second":
            await check.second(admin)
        else:
            raise ValueError("phase %r" % phase)
    finally:
        await admin.close()
    print(json.dumps(check.summary, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
