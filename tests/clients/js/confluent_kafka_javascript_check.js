// Drives a Skald server with @confluentinc/kafka-javascript (librdkafka under a KafkaJS-shaped
// API) and prints one JSON summary; tests/interop_js.rs compares it exactly.
//
// Usage: node confluent_kafka_javascript_check.js BOOTSTRAP TOPIC GROUP BASE_TIMESTAMP_MS first|second
//
// "first": the admin creates TOPIC (2 partitions; again, which reports it existed); one producer
// per compression codec (librdkafka's defaults otherwise) sends 10 keyed records with headers
// and explicit timestamps each, record i to partition i % 2; a group consumer reads them all,
// commits {p0: 10, p1: 5} and the admin describes the group while it is the member. The test
// then restarts the server.
// "second": a new member must resume exactly at the commit, seeks partition 0 back to its last
// 3 records and reads them again, then commits the end; the admin fetches the group's offsets,
// lists groups, lists offsets (low/high, by timestamp) and deletes records. Timestamps are
// printed relative to BASE_TIMESTAMP_MS.
'use strict';

const { KafkaJS } = require('@confluentinc/kafka-javascript');

const { Kafka, CompressionTypes, ConsumerGroupStates, logLevel } = KafkaJS;
const stateName = (state) => Object.keys(ConsumerGroupStates).find((k) => ConsumerGroupStates[k] === state);
const [bootstrap, topic, group, baseArg, phase] = process.argv.slice(2);
const base = Number(baseArg);
const PARTITIONS = 2;
const PER_CODEC = 10;
const CODECS = [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP],
  ['snappy', CompressionTypes.SNAPPY], ['lz4', CompressionTypes.LZ4], ['zstd', CompressionTypes.ZSTD]];
const RECORDS = CODECS.length * PER_CODEC;
const COMMIT = { 0: 10, 1: 5 };
const DEADLINE_MS = 60000;

const kafka = new Kafka({ kafkaJS: { clientId: 'confluent-js-check', brokers: [bootstrap], logLevel: logLevel.WARN } });
const summary = {};

function record(message, partition) {
  const headers = Object.entries(message.headers).map(([k, v]) => [k, v.toString()]);
  return [partition, Number(message.offset), Number(message.timestamp) - base,
    message.key.toString(), message.value.toString(), headers];
}

function byPartitionAndOffset(a, b) {
  return a[0] - b[0] || a[1] - b[1];
}

/** A running group member; `records` grows as messages arrive, `waitFor(n)` resolves once
 * there are n of them (or rejects at the deadline). */
async function groupMember(clientId) {
  const consumer = kafka.consumer({ kafkaJS: { groupId: group, fromBeginning: true, autoCommit: false }, 'client.id': clientId });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic] });
  const records = [];
  let waiters = [];
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      records.push(record(message, partition));
      waiters = waiters.filter((check) => !check());
    },
  });
  const waitFor = (count) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${records.length} of ${count} records before the deadline`)), DEADLINE_MS);
    const check = () => {
      if (records.length < count) return false;
      clearTimeout(timer);
      resolve();
      return true;
    };
    if (!check()) waiters.push(check);
  });
  return { consumer, records, waitFor };
}

async function describeGroup(admin) {
  const { groups } = await admin.describeGroups([group]);
  const g = groups[0];
  return {
    state: stateName(g.state), protocol_type: g.protocolType, protocol: g.protocol,
    members: g.members.map((m) => [m.clientId,
      (m.memberAssignment?.topicPartitions ?? m.assignment?.topicPartitions ?? [])
        .map((tp) => `${tp.topic}-${tp.partition}`).sort()]),
  };
}

async function groupOffsets(admin) {
  const [fetched] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  if (fetched === undefined) return [];
  return fetched.partitions.sort((a, b) => a.partition - b.partition).map((p) => Number(p.offset));
}

/** The group's offsets once they are `expected`, or what they are at the deadline. This
 * client's `commitOffsets` resolves when librdkafka has queued the commit (`commitAsync`), not
 * when the broker has acknowledged it, so the commit may not have reached the broker yet. */
async function groupOffsetsOnce(admin, expected) {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const offsets = await groupOffsets(admin);
    if (JSON.stringify(offsets) === JSON.stringify(expected) || Date.now() > deadline) return offsets;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function first(admin) {
  summary.create = await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }] });
  summary.create_again = await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }] });

  summary.produced = [];
  for (const [c, [name, compression]] of CODECS.entries()) {
    const producer = kafka.producer({ kafkaJS: { compression } });
    await producer.connect();
    const messages = [];
    for (let i = c * PER_CODEC; i < (c + 1) * PER_CODEC; i++) {
      messages.push({
        key: `key-${i}`, value: `value-${i}`, partition: i % PARTITIONS, timestamp: String(base + i * 1000),
        headers: { codec: name, seq: String(i) },
      });
    }
    const sent = await producer.send({ topic, messages });
    await producer.disconnect();
    summary.produced.push(sent.map((r) => [name, r.partition, r.errorCode, Number(r.baseOffset)])
      .sort((a, b) => a[1] - b[1]));
  }

  const a = await groupMember('confluent-js-a');
  await a.waitFor(RECORDS);
  summary.consumed_a = a.records.slice().sort(byPartitionAndOffset);
  await a.consumer.commitOffsets(Object.entries(COMMIT).map(([p, o]) => ({ topic, partition: Number(p), offset: String(o) })));
  summary.committed_a = await groupOffsetsOnce(admin, [COMMIT[0], COMMIT[1]]);
  summary.group_with_a = await describeGroup(admin);
  await a.consumer.disconnect();
}

async function second(admin) {
  summary.group_after_restart = await describeGroup(admin);
  const remaining = RECORDS - COMMIT[0] - COMMIT[1];
  const b = await groupMember('confluent-js-b');
  await b.waitFor(remaining);
  summary.consumed_b = b.records.slice().sort(byPartitionAndOffset);
  // Back to partition 0's last 3 records: they come again.
  b.consumer.seek({ topic, partition: 0, offset: String(RECORDS / PARTITIONS - 3) });
  await b.waitFor(remaining + 3);
  summary.after_seek = b.records.slice(remaining).sort(byPartitionAndOffset);
  await b.consumer.commitOffsets([0, 1].map((partition) => ({ topic, partition, offset: String(RECORDS / PARTITIONS) })));
  await b.consumer.disconnect();
  summary.group_offsets = await groupOffsetsOnce(admin, [RECORDS / PARTITIONS, RECORDS / PARTITIONS]);
  summary.group_after_b = await describeGroup(admin);
  summary.groups = (await admin.listGroups()).groups.map((g) => [g.groupId, g.protocolType, stateName(g.state)]).sort();

  const offsets = async () => ({
    low_high: (await admin.fetchTopicOffsets(topic)).sort((x, y) => x.partition - y.partition).map((p) => [Number(p.low), Number(p.high)]),
    at_5000: (await admin.fetchTopicOffsetsByTimestamp(topic, base + 5000)).sort((x, y) => x.partition - y.partition).map((p) => Number(p.offset)),
  });
  summary.offsets = await offsets();
  const deleted = await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '5' }] });
  summary.delete_records = deleted.map((d) => [d.partition, Number(d.lowWatermark)]);
  summary.offsets_after_delete = await offsets();
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (phase === 'first') await first(admin);
    else if (phase === 'second') await second(admin);
    else throw new Error(`phase ${phase}`);
  } finally {
    await admin.disconnect();
  }
  const sorted = Object.fromEntries(Object.entries(summary).sort(([a], [b]) => (a < b ? -1 : 1)));
  process.stdout.write(`${JSON.stringify(sorted)}\n`);
}

main().catch((e) => {
  process.stderr.write(`confluent_kafka_javascript_check: ${e.stack || e}\n`);
  process.exit(1);
});
